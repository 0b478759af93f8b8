"""One decode per frame for ``transnetv2-hsvcut``, and TransNetV2's decode in time segments.

The GPU default used to decode every video twice, each pass alone: TransNetV2's 48x27 frames in
one process, then ``hsvcut``'s planes (in segments on many cores). Here each decoded frame feeds
both from one shrink of its planes (``shrink``): ``hsvcut`` reads the 256-wide RGB frame its own
pass would make and TransNetV2 that frame shrunk again to 48x27. On many cores the video is cut
into ``segments``' time spans, one process each; every process keeps the 48x27 frames whose time
lies in its own span (``start <= time < end``) and hands them back in a file. The parent stitches
them in time order into exactly the frame stream one pass decodes and runs the network over it, as
one pass does: same frames, same windows, same batches, so the scores are the single pass's, not
merely close. ``hsvcut`` sees in each process just what its own segmented pass sees
(``LEAD_SECONDS`` either side), so its cuts are unchanged too. On few cores everything runs in
this process: ``hsvcut`` on a thread fed by the decode loop, which feeds the network.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from scenescribe.media.spool import FrameSpool, TickTap, tap_from_job
from scenescribe.media.stream import DecodedFrame, VideoStream
from scenescribe.records import VideoInfo
from scenescribe.shots.base import Cut
from scenescribe.shots.segments import (
    LEAD_SECONDS,
    Segment,
    _run_worker,
    auto_workers,
    constant_rate,
    plan_segments,
)
from scenescribe.shots.shrink import SMALL_WIDTH, frame_small_rgb, small_size
from scenescribe.shots.transnetv2 import network_input

_PROGRESS_STEP = 64
_QUEUE = 64  # decoded frames waiting for the hsvcut thread
Small = tuple[float, np.ndarray]  # (time, 48x27 RGB) of one frame, for TransNetV2


def decode_both(path: str | Path, *, start: float = 0.0, end: float | None = None,
                threads: int = 0, hsv_width: int | None = SMALL_WIDTH,
                tap: TickTap | None = None) -> Iterator[tuple[DecodedFrame, np.ndarray]]:
    """Each frame with what ``hsvcut``'s own pass (``iter_frames(pixel_format="yuv420p",
    start=, end=)``) hands its ``frame_features``, and TransNetV2's 48x27 input.

    Both come from one shrink of the decoded planes (``shrink.small_rgb``, ``SMALL_WIDTH``
    wide): the frame's image is that small RGB when ``hsv_width`` is ``SMALL_WIDTH`` (the very
    pixels ``frame_features`` would make from the planes), the planes for another width, and
    empty when ``hsv_width`` is None (no hsvcut). The span, seek and frame numbering follow
    ``iter_frames`` line for line: the frames and indices must be the ones each detector's own
    pass sees. ``tap`` is offered every decoded frame (``media.spool``).
    """
    video = VideoStream(path, threads)
    size: tuple[int, int] | None = None
    seeked = start > 0
    if seeked:
        video.seek(start)
    yielded = 0
    empty = np.zeros((0, 0), np.uint8)
    try:
        for count, (frame, t) in enumerate(video.frames(start)):
            if end is not None and t >= end:
                break
            if tap is not None:
                tap.offer(frame, t, video.rotation or 0)
            if t + 1e-6 < start:
                continue
            if size is None:
                size = small_size(frame.width, frame.height, SMALL_WIDTH)
            small = frame_small_rgb(frame, size)
            image = (empty if hsv_width is None else small if hsv_width == SMALL_WIDTH
                     else frame.to_ndarray(format="yuv420p"))
            yielded += 1
            yield (DecodedFrame(round(t / video.step) if seeked else count, t, image),
                   network_input(small, video.rotation or 0))
    finally:
        video.close(f"the {yielded} frames that decode")


def _hsv_width(detector: Any) -> int | None:
    return None if detector is None else int(detector.options.downscale_width)


def run_segment(detector: Any, path: str, fps: float, segment: Segment, threads: int,
                out: str, advance: Callable[[float], None] | None = None,
                tap: TickTap | None = None) -> list[Cut]:
    """One segment in a worker: ``detector``'s cuts in the span (None: no detector, only the
    small frames) and the span's 48x27 frames and times saved to ``out`` (``.npz``); ``tap``
    keeps the span's frames for a later stage."""
    lead = LEAD_SECONDS if detector is not None else 0.5  # the network needs no lead here
    times: list[float] = []
    smalls: list[np.ndarray] = []
    pending = 0

    def frames() -> Iterator[DecodedFrame]:
        nonlocal pending
        for frame, small in decode_both(path, start=max(0.0, segment.start - lead),
                                        end=segment.end + lead, threads=threads,
                                        hsv_width=_hsv_width(detector), tap=tap):
            if segment.start <= frame.time < segment.end:
                times.append(frame.time)
                smalls.append(small)
                pending += 1
                if advance is not None and pending >= 4 * _PROGRESS_STEP:
                    advance(pending)
                    pending = 0
            yield frame

    cuts: list[Cut] = []
    if detector is not None:
        cuts = [c for c in detector.cuts_from_frames(frames(), fps)
                if segment.start <= c.time < segment.end]
    else:
        for _ in frames():
            pass
    if advance is not None and pending:
        advance(pending)
    shape = smalls[0].shape if smalls else (27, 48, 3)
    np.savez(out, times=np.asarray(times, np.float64),
             frames=np.stack(smalls) if smalls else np.zeros((0, *shape), np.uint8))
    return cuts


class SharedDecode:
    """The frames of one video for TransNetV2 (``frames``) and, when ``hsv`` is given, the cuts
    ``hsv`` finds in the same decode (``cuts``, once ``frames`` is exhausted); ``spool`` gets the
    frames a later stage picks from the same decode. In segments, once the last decoder is done
    (while the network may still be reading the frames) ``on_decoded`` is called and the spool
    sealed (if every decoder succeeded); in one pass, at its end. Use as a context manager:
    leaving it stops the workers and removes their files."""

    def __init__(self, hsv: Any, video: VideoInfo, advance: Callable[[float], None],
                 threads: int = 0, workers: int = 0,
                 segments: list[Segment] | None = None, spool: FrameSpool | None = None,
                 on_decoded: Callable[[], None] | None = None) -> None:
        self.hsv, self.video, self.advance, self.threads = hsv, video, advance, threads
        self.spool, self.on_decoded = spool, on_decoded
        self.segments = segments or plan_segments(video.duration, workers or auto_workers())
        self.parallel = len(self.segments) > 1 and constant_rate(video)
        self._futures: list[Future[list[Cut]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._tmp: str | None = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[DecodedFrame | None] = queue.Queue(_QUEUE)
        self._result: list[Cut] = []
        self._error: BaseException | None = None
        if self.parallel:
            self._start_workers()

    def __enter__(self) -> SharedDecode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_workers(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="scenescribe-shots-")
        # Threads only relay the worker processes' output; the decoders share the cores.
        threads = self.threads or max(1, (os.cpu_count() or 1) // len(self.segments))
        job = {"backend": self.hsv.name if self.hsv is not None else None,
               "options": _options(self.hsv), "path": str(self.video.path),
               "fps": self.video.fps, "threads": threads}
        self._pool = ThreadPoolExecutor(len(self.segments), thread_name_prefix="shots")
        for k, seg in enumerate(self.segments):
            small = os.path.join(self._tmp, f"{k}.npz")
            spool = None if self.spool is None else self.spool.job(k, seg.start, seg.end)
            self._futures.append(self._pool.submit(
                _run_worker, {**job, "start": seg.start, "end": seg.end, "small": small,
                              "spool": spool}, self.advance))
        left = [len(self._futures)]
        lock = threading.Lock()

        def one_done(future: Future[list[Cut]]) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            self._decoded(all(not f.cancelled() and f.exception() is None
                              for f in self._futures))

        for future in self._futures:
            future.add_done_callback(one_done)

    def _decoded(self, whole: bool) -> None:
        """Every decoder is done (``whole``: each wrote its part): the spool's reader and the
        next video's decode need not wait for the network to read the frames."""
        if whole and self.spool is not None:
            self.spool.seal(len(self._futures) if self.parallel else 1)
        if self.on_decoded is not None:
            self.on_decoded()

    def frames(self) -> Iterator[Small]:
        """(time, 48x27 RGB) of every frame, in time order, as one pass decodes them."""
        if self.parallel:
            assert self._tmp is not None
            for k, future in enumerate(self._futures):
                future.result()  # raises the worker's failure
                path = os.path.join(self._tmp, f"{k}.npz")
                with np.load(path) as data:
                    times, smalls = data["times"], data["frames"]
                os.unlink(path)
                yield from zip(times.tolist(), smalls, strict=True)
            if self.spool is not None:  # (sealed already unless a callback is still running)
                self.spool.seal(len(self._futures))  # every worker wrote its part
            return
        yield from self._in_process()

    def cuts(self) -> list[Cut]:
        """``hsv``'s cuts, once ``frames`` has been read to its end."""
        if self.parallel:
            return sorted((c for f in self._futures for c in f.result()), key=lambda c: c.frame)
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def _in_process(self) -> Iterator[Small]:
        hsv = self.hsv
        if hsv is not None:
            self._thread = threading.Thread(target=self._hsv_thread, name="shots-hsvcut",
                                            daemon=True)
            self._thread.start()
        pending = 0
        tap = None if self.spool is None else self.spool.tap()
        try:
            for frame, small in decode_both(self.video.path, threads=self.threads,
                                            hsv_width=_hsv_width(hsv), tap=tap):
                if hsv is not None:
                    self._put(frame)
                yield frame.time, small
                pending += 1
                if pending >= _PROGRESS_STEP:
                    self.advance(pending)
                    pending = 0
            if tap is not None:
                tap.close()
                tap = None
            self._decoded(True)
        finally:
            if tap is not None:
                tap.abandon()
            if pending:
                self.advance(pending)
            if hsv is not None:
                self._put(None)

    def _put(self, item: DecodedFrame | None) -> None:
        """Hand a frame to the hsvcut thread; never wait on a thread that has stopped."""
        assert self._thread is not None
        while self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return
        if self._error is not None and item is not None:
            raise self._error

    def _hsv_thread(self) -> None:
        def frames() -> Iterator[DecodedFrame]:
            while (frame := self._queue.get()) is not None:
                yield frame

        try:
            self._result = self.hsv.cuts_from_frames(frames(), self.video.fps or 25.0)
        except BaseException as exc:  # re-raised by ``cuts`` on the caller's thread
            self._error = exc

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._put(None)
            self._thread.join()
        if self._pool is not None:
            for future in self._futures:
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _options(detector: Any) -> dict[str, Any] | None:
    from scenescribe.options import to_dict

    return None if detector is None else to_dict(detector.options)


def worker_job(job: dict[str, Any], report: Callable[[float], None]) -> list[Cut]:
    """A segment job with ``small`` set (see ``segments._worker_main``)."""
    from scenescribe import registry
    from scenescribe.options import ShotOptions

    detector = None
    if job.get("backend"):
        detector = registry.create(job["backend"], "shots", options=ShotOptions(**job["options"]))
        detector.load()
    end = float(job["end"])
    segment = Segment(float(job["start"]), end if math.isfinite(end) else math.inf)
    tap = tap_from_job(job.get("spool"))
    cuts = run_segment(detector, job["path"], float(job["fps"]), segment, int(job["threads"]),
                       job["small"], report, tap)
    if tap is not None:
        tap.close()
    return cuts
