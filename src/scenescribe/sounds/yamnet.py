"""YAMNet (521 AudioSet classes) as TFLite on the CPU through ai_edge_litert.

The graph takes exactly 15,600 samples (0.975 s at 16 kHz) and returns one score vector; windows
hop 0.48 s like YAMNet's own patch framing. Batching is not possible: resizing the input to
``[N, 15600]`` or to a longer waveform fails in the graph's first RESHAPE (and in XNNPACK), so
the interpreter is invoked once per window. Measured per window with XNNPACK: 2.3 ms on one
thread, 1.2 ms on two (without XNNPACK: 7.6 ms).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scenescribe.errors import ModelNotFoundError
from scenescribe.sounds.windows import WindowedTagger, WindowSpec

log = logging.getLogger("scenescribe.sounds")

SAMPLE_RATE = 16_000
WINDOW = 15_600  # 0.975 s: 96 log-mel frames of 10 ms plus the STFT's 25 ms window
HOP = 7_680  # 0.48 s: YAMNet's patch hop
MODEL_FILE = "yamnet.tflite"
CLASS_MAP = "yamnet_class_map.csv"


def read_class_map(path: Path) -> list[str]:
    """``display_name`` of each row of YAMNet's class map, in index order."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "display_name" not in rows[0]:
        raise ModelNotFoundError(f"{path}: not a YAMNet class map (no display_name column)")
    return [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]


def _model_files(weights: Path) -> tuple[Path, Path]:
    """The .tflite file and its class map, given either the folder or the .tflite file."""
    model = weights / MODEL_FILE if weights.is_dir() else weights
    class_map = model.with_name(CLASS_MAP)
    for p in (model, class_map):
        if not p.is_file():
            raise ModelNotFoundError(f"yamnet: {p} not found (expected {MODEL_FILE} and "
                                     f"{CLASS_MAP} side by side)")
    return model, class_map


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what C++ code writes to file descriptor 2 (Python's own stderr is untouched)."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded hosts): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _Yamnet:
    """A loaded interpreter with its tensor indices and labels."""

    def __init__(self, model: Path, class_map: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with _quiet_native_stderr():  # TFLite prints an INFO line that breaks progress bars
            self.interpreter = Interpreter(model_path=str(model), num_threads=threads)
            self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        if list(inp["shape"]) != [1, WINDOW]:
            raise ModelNotFoundError(f"{model}: expected input shape [1, {WINDOW}], "
                                     f"found {list(inp['shape'])}")
        self.labels = read_class_map(class_map)
        # The scores output is the one with a class axis; the other is the log-mel patch.
        outputs = [o for o in self.interpreter.get_output_details()
                   if list(o["shape"]) == [1, len(self.labels)]]
        if not outputs:
            raise ModelNotFoundError(f"{model}: no output of shape [1, {len(self.labels)}] "
                                     f"matching {class_map.name}")
        self.input_index = inp["index"]
        self.output_index = outputs[0]["index"]

    def score(self, samples: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, samples.reshape(1, WINDOW))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)[0].copy()


class YamnetTagger(WindowedTagger):
    """YAMNet TFLite; always on the CPU (a CUDA device is noted and ignored)."""

    batch_size = 32  # windows per read; each is still one invoke
    threads = 2  # measured: 2.3 ms per window on 1 thread, 1.2 ms on 2; more is unmeasured

    def _load(self) -> Any:
        if self.device != "cpu":
            log.info("yamnet runs on the CPU (TFLite); device %s is not used", self.device)
        model, class_map = _model_files(Path(self.weights()))
        return _Yamnet(model, class_map, max(1, min(self.threads, os.cpu_count() or 1)))

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "device": "cpu"}

    @property
    def spec(self) -> WindowSpec:
        return WindowSpec(SAMPLE_RATE, WINDOW, HOP, fixed=True, min_span=WINDOW)

    @property
    def labels(self) -> Sequence[str]:
        return self.model.labels

    def score_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.model.score(np.asarray(w, np.float32)) for w in windows])
