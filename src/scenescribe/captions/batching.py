"""How the caption engine sizes and feeds its batches: a measured cap, a throughput tuner, and a
one-slot prefetch that prepares batch k+1 on a CPU thread while batch k generates.

The batch a GPU can hold grows with its memory, but scenes per second stop growing well before:
past the knee a larger batch only lengthens each decode step. So the memory-derived batch is
capped at the knee measured for the family (``KNEES``), or at ``[captions] max_batch``, and an
optional tuner (``[captions] adaptive_batch``) times the first batches at a few candidate sizes
and keeps the one with the fewest seconds per scene.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

log = logging.getLogger("scenescribe.captions")

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_KNEE = 64
# Scenes per batch past which scenes/s stop improving, per family, where measured.
# llava-v1.6-mistral-7b, one H200, bf16, 2 x 672x378 frames, 256 new tokens
# (benchmarks/results/h200-2026-12-02-nf4): 0.61 s/scene at 32, 0.29-0.38 at 64. Larger batches
# are unmeasured, so 64 stays the cap there; families not listed take ``DEFAULT_KNEE``.
KNEES: dict[str, int] = {"llava-v1.6-mistral-7b": 64}
SWITCH_MARGIN = 0.05  # a smaller candidate must be this much faster per scene to be chosen


def knee(name: str, max_batch: int) -> int:
    """The batch cap: ``max_batch`` when set (> 0), else the family's measured knee."""
    return max_batch if max_batch > 0 else KNEES.get(name, DEFAULT_KNEE)


class BatchTuner:
    """Chooses the batch size by measured seconds per scene.

    The first batches run at each candidate size in turn (largest first); ``record`` takes each
    batch's generation seconds. Once every candidate has been timed the one with the fewest
    seconds per scene is kept (a smaller one only when ``SWITCH_MARGIN`` faster: the first
    batches hold the longest prompts, which favours the later, smaller trial). ``fixed`` makes a
    tuner that never tries anything but its one size.
    """

    def __init__(self, candidates: Sequence[int], name: str = "") -> None:
        sizes = sorted({c for c in candidates if c > 0}, reverse=True)
        if not sizes:
            raise ValueError("a batch tuner needs at least one candidate size >= 1")
        self.name = name
        self.sizes = list(sizes)  # the candidates
        self.trials = list(sizes)  # handed out, in order, before the choice
        self.timings: dict[int, tuple[int, float]] = {}  # size -> (scenes, seconds)
        self.chosen: int | None = sizes[0] if len(sizes) == 1 else None
        self.cap: int | None = None

    @classmethod
    def fixed(cls, size: int) -> BatchTuner:
        return cls([size])

    @classmethod
    def plan(cls, size: int, scenes: int, adaptive: bool, name: str = "") -> BatchTuner:
        """Try ``size`` and half of it when asked and when enough scenes remain to use the
        winner afterwards (one full batch past the trials); else always ``size``."""
        half = size // 2
        if adaptive and half >= 1 and scenes >= size + half + size:
            return cls([size, half], name)
        return cls.fixed(size)

    def next_size(self) -> int:
        """The size of the next batch to prepare."""
        if self.chosen is not None:
            size = self.chosen
        elif self.trials:
            size = self.trials.pop(0)
        else:  # every trial handed out, not all timed yet: the best so far
            size = self._best() or self.sizes[0]
        return min(size, self.cap) if self.cap else size

    def record(self, size: int, scenes: int, seconds: float) -> None:
        """Generation seconds of one batch planned at ``size`` that held ``scenes`` scenes."""
        if self.chosen is not None or size not in self.sizes or scenes < 1:
            return
        done, total = self.timings.get(size, (0, 0.0))
        self.timings[size] = (done + scenes, total + seconds)
        if all(s in self.timings for s in self.sizes):
            self.chosen = self._best()
            log.info("%s: batch %d chosen by measured throughput (%s)", self.name, self.chosen,
                     ", ".join(f"{s}: {self.per_scene(s):.3f} s/scene" for s in self.sizes))

    def limit(self, cap: int) -> None:
        """No batch above ``cap`` (after an out-of-memory error); larger candidates are dropped."""
        self.cap = cap
        self.sizes = [s for s in self.sizes if s <= cap] or [cap]
        self.trials = [s for s in self.trials if s <= cap]
        self.timings = {s: t for s, t in self.timings.items() if s in self.sizes}
        if self.chosen is not None:
            self.chosen = min(self.chosen, cap)
        elif len(self.sizes) == 1 or all(s in self.timings for s in self.sizes):
            self.chosen = self._best() or self.sizes[0]

    def per_scene(self, size: int) -> float:
        scenes, seconds = self.timings[size]
        return seconds / scenes

    def _best(self) -> int | None:
        timed = [s for s in self.sizes if s in self.timings]  # largest first
        if not timed:
            return None
        best = timed[0]
        for size in timed[1:]:  # a smaller one must beat the larger by the margin
            if self.per_scene(size) < self.per_scene(best) * (1 - SWITCH_MARGIN):
                best = size
        return best


class Prefetcher(Generic[T, R]):
    """A one-slot queue: ``submit`` starts preparing an item on a worker thread, ``result``
    returns it (or raises what preparing raised). Disabled, ``result`` prepares in the caller."""

    def __init__(self, prepare: Callable[[T], R], enabled: bool = True) -> None:
        self.prepare = prepare
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="caption-prep") if enabled else None
        self._item: T | None = None
        self._future: Future[R] | None = None

    def submit(self, item: T) -> None:
        if self._future is not None or self._item is not None:
            raise RuntimeError("the prefetch slot is taken: call result() or discard() first")
        self._item = item
        if self._pool is not None:
            self._future = self._pool.submit(self.prepare, item)

    def result(self) -> R:
        item, future = self._item, self._future
        self._item, self._future = None, None
        if future is not None:
            return future.result()
        if item is None:
            raise RuntimeError("nothing was submitted")
        return self.prepare(item)

    def discard(self) -> None:
        """Drop what is in the slot (its preparation is waited for, its errors ignored)."""
        future = self._future
        self._item, self._future = None, None
        if future is not None:
            try:
                future.result()
            except Exception:  # prepared for a batch that will be re-planned: nothing to report
                log.debug("discarded prefetch failed", exc_info=True)

    def close(self) -> None:
        self.discard()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def take(pending: list[Any], size: int) -> list[Any]:
    """The first ``size`` items of ``pending``, removed from it."""
    batch = pending[:size]
    del pending[:size]
    return batch
