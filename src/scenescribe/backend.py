"""The base every model backend shares: its registry entry, options, device and weights."""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

from scenescribe.registry import ModelEntry, resolve_weights

log = logging.getLogger("scenescribe.backend")

# Loads run one at a time: Stage 1 components load from parallel threads, and neither half of a
# load is thread-safe. transformers' lazy module imports race (two threads importing at once can
# see a half-built module: "cannot import name 'ASTForAudioClassification'"), and
# ``from_pretrained`` sets torch's process-wide default dtype while it builds a model, so weights
# loaded side by side were built in each other's dtypes (measured on the H200: random Whisper
# large-v3 in fp16 loading beside AST failed with "expected scalar type BFloat16 but found
# Half"). Computing still overlaps; a backend may name ``load_imports`` to import them first.
_LOAD_LOCK = threading.RLock()


def import_names(names: tuple[str, ...]) -> None:
    """Import ``"pkg.module"`` names; ``"pkg:Name"`` also resolves a lazily exported name (the
    attribute access is what makes transformers import the submodule behind it)."""
    for name in names:
        module, _, attr = name.partition(":")
        loaded = importlib.import_module(module)
        if attr:
            getattr(loaded, attr)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; others pass through."""
    if device != "auto":
        return device
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec("torch") is None:
        return "cpu"
    if "torch" not in sys.modules and not os.path.exists("/proc/driver/nvidia/version"):
        return "cpu"  # no NVIDIA driver: skip importing torch (~600 MB, seconds) just to ask
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Backend:
    """A loadable model. Subclasses implement ``_load`` and may override ``unload``.

    ``load`` is idempotent; ``unload`` frees the model (stage-major lifetimes: load, run over
    every video, free, load the next).
    """

    # Options that change only speed or what else the run does, never this backend's output.
    SPEED_OPTIONS: tuple[str, ...] = ("batch_size", "api_concurrency", "threads", "workers",
                                      "models", "cache", "use_cache", "max_batch",
                                      "adaptive_batch")
    # What ``_load`` imports (see ``import_names``); empty: the whole load is serialised.
    load_imports: ClassVar[tuple[str, ...]] = ()

    def __init__(self, entry: ModelEntry, options: Any, device: str = "cpu",
                 model_dir: Path | None = None) -> None:
        self.entry = entry
        self.options = options
        self.device = device
        self.model_dir = model_dir
        self.model: Any = None

    @property
    def name(self) -> str:
        return self.entry.name

    def weights(self) -> Path | str:
        """Local weights path (or hub id) following the registry's resolution order."""
        explicit = getattr(self.options, "weights", None)
        return resolve_weights(self.entry, path=explicit, model_dir=self.model_dir)

    def cache_key(self) -> dict[str, Any]:
        """This backend's identity: name, checkpoint, revision and the options that change its
        output (``SPEED_OPTIONS`` and the run's list of models are left out)."""
        from scenescribe.options import to_dict

        options = {k: v for k, v in to_dict(self.options).items() if k not in self.SPEED_OPTIONS}
        return {"backend": self.entry.name, "checkpoint": self.entry.checkpoint,
                "revision": self.entry.revision, "options": options}

    def facts(self) -> dict[str, Any]:
        """Model facts for the run file."""
        return {"name": self.entry.name, "checkpoint": self.entry.checkpoint,
                "revision": self.entry.revision, "device": self.device}

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        if self.model is not None:
            return
        # Per backend: two threads asking for one model load it once. dict.setdefault is atomic.
        with self.__dict__.setdefault("_own_load_lock", threading.Lock()):
            if self.model is not None:
                return
            with _LOAD_LOCK:
                self._imports()
                self.model = self._load()

    def _imports(self) -> None:
        """Import what ``_load`` needs (``load_imports``), under the process-wide lock."""
        import_names(self.load_imports)

    def _load(self) -> Any:
        return True

    def unload(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> Backend:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()
