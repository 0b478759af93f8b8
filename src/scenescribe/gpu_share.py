"""One process's GPU threads and CUDA graph captures: a capture runs while no other thread of
the process launches GPU work, and latency-bound work may hold the GPU alone.

Stage 1 components and the caption stage run side by side on threads of one process. A CUDA
graph capture on one thread fails when another thread synchronises or allocates meanwhile
("operation not permitted when stream is capturing", measured on the H200 with Whisper's
graphs beside YOLO), and a failed capture can leave the context unusable. So each component's
GPU call holds ``launching()`` (shared: any number at once) and a capture holds ``capturing()``
(exclusive). A waiting capture goes first: new ``launching()`` callers wait behind it, so a
steady stream of calls cannot starve it. A capture takes milliseconds; each component's call
holds the lock for one batch. Calls that must not wait out an exclusive batch hold it
``beside_exclusive``: the caption stage's (seconds long) and the shot detector's (the head of
Stage 1's critical path).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


class _SharedExclusive:
    """The holds, under one condition: ``launching`` (shared; ``beside_exclusive`` for calls
    an exclusive batch must not hold up), ``exclusive`` (one thread; waits for and holds off
    the other launches only) and ``capturing`` (one thread; waits for and holds off every
    hold). Waiting captures and exclusive holds go before new launches."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = {False: 0, True: 0}  # threads inside launching(), by beside_exclusive
        self._capturing: threading.Thread | None = None
        self._exclusive: threading.Thread | None = None
        self._waiting_captures = 0
        self._waiting_exclusive = 0
        self._local = threading.local()

    def _mine(self) -> bool:
        me = threading.current_thread()
        return self._capturing is me or self._exclusive is me

    @contextlib.contextmanager
    def launching(self, beside_exclusive: bool = False) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth or self._mine():
            # Nested, or inside this thread's own exclusive hold: it already holds what it needs.
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        with self._cond:
            while (self._capturing is not None or self._waiting_captures
                   or (not beside_exclusive
                       and (self._exclusive is not None or self._waiting_exclusive))):
                self._cond.wait()
            self._active[beside_exclusive] += 1
        self._local.depth, self._local.counted = 1, beside_exclusive
        try:
            yield
        finally:
            self._local.depth, self._local.counted = 0, None
            with self._cond:
                self._active[beside_exclusive] -= 1
                self._cond.notify_all()

    def _set_aside(self) -> bool | None:
        """Under the condition: this thread's own ``launching()`` hold, if any, set aside while
        it waits for and holds an exclusive one (two such threads cannot wait on each other);
        its kind, for ``_restore``."""
        # Only a counted hold: one taken inside this thread's exclusive hold counts nothing.
        kind: bool | None = getattr(self._local, "counted", None)
        if kind is not None:
            self._active[kind] -= 1
        return kind

    def _restore(self, kind: bool | None) -> None:
        if kind is not None:
            self._active[kind] += 1

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Exclusive of every other hold. Called inside this thread's own ``launching()``, that
        hold is set aside while the capture waits and runs; inside its own ``exclusive()``,
        it also waits for the holds that go on beside it to end."""
        me = threading.current_thread()
        if self._capturing is me:
            yield
            return
        with self._cond:
            aside = self._set_aside()
            self._waiting_captures += 1
            try:
                while (self._capturing is not None
                       or self._exclusive not in (None, me) or any(self._active.values())):
                    self._cond.wait()
            finally:
                self._waiting_captures -= 1
            self._capturing = me
        try:
            yield
        finally:
            with self._cond:
                self._capturing = None
                self._restore(aside)
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Exclusive of the other threads' launches (and of captures), but for those held
        ``beside_exclusive``."""
        me = threading.current_thread()
        if self._mine():
            yield
            return
        with self._cond:
            aside = self._set_aside()
            self._waiting_exclusive += 1
            try:
                while (self._capturing is not None or self._waiting_captures
                       or self._exclusive is not None or self._active[False]):
                    self._cond.wait()
            finally:
                self._waiting_exclusive -= 1
            self._exclusive = me
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = None
                self._restore(aside)
                self._cond.notify_all()


_SHARE = _SharedExclusive()
launching = _SHARE.launching
capturing = _SHARE.capturing
# For work that should have the GPU to itself: a chain of thousands of small dependent kernels
# (Whisper's decoding steps and word alignment) waits for a free SM behind every large kernel
# of the other threads; alone it runs several times faster. The caption stage's batches go on
# beside it (waiting out one would stall every Stage 1 component for seconds), and so do the
# shot detector's calls (on W1 they waited out Whisper's batch and Stage 1 ended 6 s later).
exclusive = _SHARE.exclusive


def capture_graph(step: Callable[[], None], device: Any, pool: Any) -> Any:
    """``step`` as a CUDA graph in memory ``pool``: run twice first on a side stream (kernels
    chosen, workspaces made, off the capture), then captured while no other thread of this
    process launches. The caller undoes what the three runs wrote. Raises what capture raised."""
    import torch

    side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: only this thread's calls are checked; the lock keeps the others out.
    with capturing(), torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        step()
    return graph


def stream_for_loaded_model(device: str, priority: int = 0) -> Any:
    """A CUDA stream of its own for a model just loaded on ``device``: the device is
    synchronised first, so the weights are in place before work on the new stream reads them."""
    import torch

    torch.cuda.synchronize(device)
    return torch.cuda.Stream(device, priority=priority)  # type: ignore[no-untyped-call]
