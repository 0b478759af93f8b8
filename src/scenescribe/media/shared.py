"""One decode pass feeding several consumers, each on its own thread ("decode once").

Each consumer ``subscribe``s its ``FrameRequest``s and reads its picks from its own bounded
queue; one background thread runs ``decode_pass`` over every request and routes each pick.
The queues are bounded so memory stays flat: a slow consumer slows the pass, which is why the
consumers must read concurrently (a consumer that reads nothing would stall the others).
A consumer that stops early ``close``s its feed and the pass stops serving it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scenescribe.media.frames import FrameRequest, Pick, decode_pass

FEED_DEPTH = 32  # picks buffered per consumer: a few YOLO batches or a few scenes' frames

_DONE = object()


class Feed(Iterator[Pick]):
    """One consumer's picks, numbered by its own request list."""

    def __init__(self, depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.closed = threading.Event()
        self.cancelled = threading.Event()

    def put(self, item: Any, stop: threading.Event) -> None:
        """Hand on ``item`` unless this feed or the whole pass is closed first."""
        while not (self.closed.is_set() or stop.is_set()):
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __next__(self) -> Pick:
        while True:
            # A cancelled pass is an error, not the end of the video: a consumer must not take
            # the frames so far for all there are (a tracker would close its scenes early).
            if self.cancelled.is_set():
                raise PassCancelled("the shared decode pass was stopped")
            if self.closed.is_set():
                raise StopIteration
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                continue
        if item is _DONE:
            self.closed.set()
            raise StopIteration
        if isinstance(item, BaseException):
            self.closed.set()
            raise item
        return item

    def close(self) -> None:
        """The consumer is done reading (the pass stops serving it)."""
        self.closed.set()


class PassCancelled(RuntimeError):
    """The shared pass stopped before the end of the video (another consumer failed)."""


class SharedPass:
    """Subscribe every consumer, then ``start``; ``close`` when done (or on failure)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.path = path
        self.threads = threads
        self._requests: list[FrameRequest] = []
        self._routes: list[tuple[Feed, int]] = []  # per pass request: its feed and local number
        self._feeds: list[Feed] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, requests: Sequence[FrameRequest], depth: int = FEED_DEPTH) -> Feed:
        if self._thread is not None:
            raise RuntimeError("subscribe before the pass starts")
        feed = Feed(depth)
        for local, request in enumerate(requests):
            self._routes.append((feed, local))
            self._requests.append(request)
        self._feeds.append(feed)
        return feed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        passes = decode_pass(self.path, self._requests, threads=self.threads)
        try:
            for pick in passes:
                feed, local = self._routes[pick.request]
                if not feed.closed.is_set():
                    feed.put(replace(pick, request=local), self._stop)
                if self._stop.is_set() or all(f.closed.is_set() for f in self._feeds):
                    break
            end: Any = _DONE
        except BaseException as exc:  # handed to every consumer, re-raised there
            end = exc
        finally:
            passes.close()  # on this thread, where the container lives
        for feed in self._feeds:
            feed.put(end, self._stop)

    def close(self) -> None:
        """Stop the pass; a consumer still reading gets ``PassCancelled``, not an early end."""
        self._stop.set()
        for feed in self._feeds:
            feed.cancelled.set()
        if self._thread is not None:
            self._thread.join()
