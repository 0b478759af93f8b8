"""One process's GPU threads and CUDA graph captures: a capture runs while no other thread of
the process launches GPU work, and latency-bound work may hold the GPU alone.

Stage 1 components and the caption stage run side by side on threads of one process. A CUDA
graph capture on one thread fails when another thread synchronises or allocates meanwhile
("operation not permitted when stream is capturing", measured on the H200 with Whisper's
graphs beside YOLO), and a failed capture can leave the context unusable. So each component's
GPU call holds ``launching()`` (shared: any number at once) and a capture holds ``capturing()``
(exclusive). A waiting capture goes first: new ``launching()`` callers wait behind it, so a
steady stream of calls cannot starve it. A capture takes milliseconds; each component's call
holds the lock for one batch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


class _SharedExclusive:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0  # threads inside launching()
        self._capturing: threading.Thread | None = None
        self._waiting = 0  # captures waiting to start
        self._local = threading.local()

    @contextlib.contextmanager
    def launching(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth or self._capturing is threading.current_thread():
            # Nested, or the capturing thread itself: it already holds what it needs.
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        with self._cond:
            while self._capturing is not None or self._waiting:
                self._cond.wait()
            self._active += 1
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Exclusive. Called inside this thread's own ``launching()``, that hold is set aside
        while the capture waits and runs (two such threads cannot wait on each other); called
        inside its own exclusive hold, it already holds what it needs."""
        me = threading.current_thread()
        if self._capturing is me:
            yield
            return
        inside = 1 if getattr(self._local, "depth", 0) else 0
        with self._cond:
            self._active -= inside
            self._waiting += 1
            try:
                while self._capturing is not None or self._active:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._capturing = me
        try:
            yield
        finally:
            with self._cond:
                self._capturing = None
                self._active += inside
                self._cond.notify_all()


_SHARE = _SharedExclusive()
launching = _SHARE.launching
capturing = _SHARE.capturing
# The same exclusive hold for work that should have the GPU to itself: a chain of thousands of
# small dependent kernels (Whisper's decoding steps and word alignment) waits for a free SM
# behind every large kernel of the other threads; alone it runs several times faster.
exclusive = _SHARE.capturing


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
