"""One decode pass feeding several consumers, each on its own thread ("decode once").

Each consumer ``subscribe``s its ``FrameRequest``s and reads its picks from its own bounded
queue; one background thread runs ``decode_pass`` over every request and routes each pick.
The queues are bounded so memory stays flat. A consumer whose queue is full slows the pass,
unless it subscribed with ``spill=True``: then the pass stops serving it and goes on at its own
speed for the others, and once the consumer has read what its queue held, a follow-up pass over
only what it missed serves the rest (a slow object tracker never holds back the JPEGs). A
consumer that stops early ``close``s its feed and the pass stops serving it; a feed whose
requests are all served ends at once, not at the end of the pass.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scenescribe.media.frames import SHOWN, TICK, FrameRequest, Pick, decode_pass

FEED_DEPTH = 32  # picks buffered per consumer: a few YOLO batches or a few scenes' frames

_DONE = object()


class Feed(Iterator[Pick]):
    """One consumer's picks, numbered by its own request list."""

    def __init__(self, depth: int, requests: Sequence[FrameRequest] = (),
                 path: str | Path | None = None, spill: bool = False,
                 workers: int | None = None) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.closed = threading.Event()
        self.cancelled = threading.Event()
        self.requests = list(requests)
        self.spill = spill and path is not None
        self.spilled = threading.Event()  # the shared pass stopped serving this feed
        self.missed_from: float | None = None  # time of the first pick the pass could not hand on
        self._path, self._workers = path, workers
        # What was handed to the consumer: where a follow-up pass must take over.
        self._shown: list[set[float]] = [set() for _ in self.requests]
        self._last_tick: list[float | None] = [None] * len(self.requests)
        self._rest: threading.Thread | None = None
        # Picks the shared pass owes this feed before it can end early (None: unknown, as a
        # tick request's picks depend on the frame rate).
        self.expected = (None if any(r.rule == TICK for r in self.requests)
                         else sum(len(set(r.times)) for r in self.requests))
        self.routed = 0

    def put(self, item: Any, stop: threading.Event) -> None:
        """Hand on ``item`` unless this feed or the whole pass is closed first."""
        while not (self.closed.is_set() or stop.is_set()):
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def offer(self, pick: Pick, stop: threading.Event) -> None:
        """``put``, except that a spilling feed that is full stops taking picks from the pass."""
        if not self.spill:
            self.put(pick, stop)
            return
        try:
            self._queue.put_nowait(pick)
        except queue.Full:
            self.missed_from = pick.frame.time
            self.spilled.set()

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
                if self.spilled.is_set() and self._rest is None:
                    self._follow_up()  # all the shared pass handed on is read: take over
                continue
        if item is _DONE:
            self.closed.set()
            raise StopIteration
        if isinstance(item, BaseException):
            self.closed.set()
            raise item
        request = self.requests[item.request] if self.requests else None
        if request is not None and request.rule == SHOWN:
            self._shown[item.request].add(item.time)
        elif request is not None:
            self._last_tick[item.request] = item.frame.time
        return item  # type: ignore[no-any-return]

    def rest(self) -> list[FrameRequest]:
        """The requests cut down to what this feed has not handed on yet: every shown time not
        served, and the ticks after the last ticked frame (one frame serves every tick it
        covers, so the ticks it covered are done)."""
        out = []
        for i, r in enumerate(self.requests):
            last = self._last_tick[i]
            times = (tuple(t for t in r.times if t not in self._shown[i]) if r.rule == SHOWN
                     else tuple(t for t in r.times if last is None or t > last + 1e-6))
            out.append(replace(r, times=times))
        return out

    def _follow_up(self) -> None:
        assert self._path is not None
        path, requests, workers = self._path, self.rest(), self._workers

        def run() -> None:
            passes = decode_pass(path, requests, workers=workers)
            try:
                for pick in passes:
                    self.put(pick, self.cancelled)
                    if self.closed.is_set() or self.cancelled.is_set():
                        break
                end: Any = _DONE
            except BaseException as exc:  # handed to the consumer, re-raised there
                end = exc
            finally:
                passes.close()  # type: ignore[attr-defined]  # on this thread (the container)
            self.put(end, self.cancelled)

        self._rest = threading.Thread(target=run, name="decode-rest", daemon=True)
        self._rest.start()

    def close(self) -> None:
        """The consumer is done reading (the pass stops serving it)."""
        self.closed.set()

    def join(self) -> None:
        if self._rest is not None:
            self._rest.join()


class PassCancelled(RuntimeError):
    """The shared pass stopped before the end of the video (another consumer failed)."""


class SharedPass:
    """Subscribe every consumer, then ``start``; ``close`` when done (or on failure).

    ``workers`` is the number of decoders side by side (``decode_pass``); ``threads`` each one's
    FFmpeg threads (0: by core count)."""

    def __init__(self, path: str | Path, threads: int = 0, workers: int | None = None) -> None:
        self.path = path
        self.threads = threads
        self.workers = workers
        self._requests: list[FrameRequest] = []
        self._routes: list[tuple[Feed, int]] = []  # per pass request: its feed and local number
        self._feeds: list[Feed] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, requests: Sequence[FrameRequest], depth: int = FEED_DEPTH,
                  spill: bool = False) -> Feed:
        if self._thread is not None:
            raise RuntimeError("subscribe before the pass starts")
        feed = Feed(depth, requests, self.path, spill, self.workers)
        for local, request in enumerate(requests):
            self._routes.append((feed, local))
            self._requests.append(request)
        self._feeds.append(feed)
        return feed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        passes = decode_pass(self.path, self._requests, threads=self.threads,
                             workers=self.workers)
        ended: set[int] = set()  # feeds that got their end (or spilled): served no more
        try:
            for pick in passes:
                feed, local = self._routes[pick.request]
                if not (feed.closed.is_set() or feed.spilled.is_set() or id(feed) in ended):
                    feed.offer(replace(pick, request=local), self._stop)
                    feed.routed += 0 if feed.spilled.is_set() else 1
                    if feed.routed == feed.expected:  # all its picks: end it now
                        feed.put(_DONE, self._stop)
                        ended.add(id(feed))
                if self._stop.is_set() or all(
                        f.closed.is_set() or f.spilled.is_set() or id(f) in ended
                        for f in self._feeds):
                    break
            end: Any = _DONE
        except BaseException as exc:  # handed to every consumer, re-raised there
            end = exc
        finally:
            passes.close()  # type: ignore[attr-defined]  # on this thread (the container)
        for feed in self._feeds:
            if id(feed) not in ended and not feed.spilled.is_set():
                feed.put(end, self._stop)

    def close(self) -> None:
        """Stop the pass; a consumer still reading gets ``PassCancelled``, not an early end."""
        self._stop.set()
        for feed in self._feeds:
            feed.cancelled.set()
        if self._thread is not None:
            self._thread.join()
        for feed in self._feeds:
            feed.join()
