"""Shot detection split into time segments decoded in parallel processes.

One decoder and one detector per segment, each in its own process: on a many-core host the
per-frame work (decoding, scaling, the detector's HSV maths) spreads over the cores instead of
one. Threads were tried first and stopped scaling at about 4 (227 -> 406 fps with 4 threads,
412 with 16, on 720p with 16 cores): the detector's per-frame Python holds the GIL. Each segment
decodes ``LEAD_SECONDS`` before its start, so the detector's windows and its ``min_scene_len``
filter are warm when the segment begins, and ``LEAD_SECONDS`` past its end, so a cut near the
end is judged with its right-hand window; it keeps only the cuts inside its own span. The result
equals one sequential pass (tests compare them), because both detectors look at most a few
frames around a cut.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from scenescribe.errors import StageError
from scenescribe.knobs import env_count
from scenescribe.media.spool import FrameSpool, TickTap, tap_from_job
from scenescribe.options import to_dict
from scenescribe.progress import Progress
from scenescribe.records import Transition, VideoInfo
from scenescribe.shots.base import Cut
from scenescribe.workers import worker_process

log = logging.getLogger("scenescribe.shots")

LEAD_SECONDS = 3.0
_PROGRESS_STEP = 256  # frames per progress line from a worker
SHOT_NICE = 5  # niceness the segment workers add (``lower_priority``)
MIN_SEGMENT_SECONDS = 20.0  # shorter ones spend more on process start, seek and lead than they save


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float  # exclusive; the last segment ends at +inf


def detect_decoded(detector: Any, video: VideoInfo, progress: Progress,
                   spool: FrameSpool | None = None) -> list[Cut]:
    """``detector``'s cuts from frames our decoder gives (``detector.frame_format()`` says how):
    in time segments, one process each, on many-core hosts; else in one pass here. ``spool``
    keeps the frames a later stage picks from the same decode (sealed when all is done)."""
    from scenescribe.media import iter_frames

    detector.load()
    segments = plan_segments(video.duration, detector.options.workers or auto_workers())
    if len(segments) > 1 and constant_rate(video):
        return detect_in_segments(detector, video, segments, progress, spool)
    tap = None if spool is None else spool.tap()
    frames = iter_frames(video.path, threads=detector.options.threads, tap=tap,
                         **detector.frame_format())
    task = progress.task("shots", total=video.num_frames)
    try:
        cuts: list[Cut] = detector.cuts_from_frames(frames, video.fps or 25.0, task.advance)
        if tap is not None and spool is not None:
            tap.close()
            spool.seal(1)
            tap = None
    finally:
        if tap is not None:
            tap.abandon()
        task.close()
    log.debug("%s: %d cuts in %s", detector.name, len(cuts), video.path)
    return cuts


def auto_workers() -> int:
    """All cores on many-core hosts; one process (no pool start-up) on small machines."""
    cpus = os.cpu_count() or 1
    return cpus if cpus >= 4 else 1


def plan_segments(duration: float, workers: int,
                  min_seconds: float = MIN_SEGMENT_SECONDS) -> list[Segment]:
    """Up to ``workers`` equal spans of at least ``min_seconds`` covering ``[0, duration)``."""
    count = max(1, min(workers, int(duration // min_seconds)))
    if count == 1:
        return [Segment(0.0, math.inf)]
    length = duration / count
    bounds = [round(k * length, 3) for k in range(count)] + [math.inf]
    return [Segment(bounds[k], bounds[k + 1]) for k in range(count)]


def constant_rate(video: VideoInfo) -> bool:
    """Segments number frames by time, which is exact only for constant-frame-rate video."""
    if not video.fps or not video.num_frames or not video.duration:
        return False
    return abs(video.num_frames - video.duration * video.fps) <= max(2.0, 0.002 * video.num_frames)


def detect_in_segments(detector: Any, video: VideoInfo, segments: list[Segment],
                       progress: Progress, spool: FrameSpool | None = None) -> list[Cut]:
    """Run ``detector``'s backend on each segment in its own process; the merged cuts in order."""
    task = progress.task("shots", total=video.num_frames)
    # Share the cores among the segments' decoders instead of each taking them all.
    threads = detector.options.threads or max(1, (os.cpu_count() or 1) // len(segments))
    job = {"backend": detector.name, "options": to_dict(detector.options),
           "path": str(video.path), "fps": video.fps, "threads": threads}
    cuts: list[Cut] = []
    try:
        # Threads only relay the worker processes' output (progress, then the cuts).
        with ThreadPoolExecutor(len(segments), thread_name_prefix="shots") as pool:
            futures = [pool.submit(_run_worker, {
                **job, "start": seg.start, "end": seg.end,
                "spool": None if spool is None else spool.job(k, seg.start, seg.end)},
                task.advance) for k, seg in enumerate(segments)]
            for future in as_completed(futures):
                cuts += future.result()
        if spool is not None:
            spool.seal(len(segments))
    finally:
        task.close()
    log.debug("%s: %d cuts from %d segments of %s", detector.name, len(cuts), len(segments),
              video.path)
    return sorted(cuts, key=lambda c: c.frame)


def _run_worker(job: dict[str, Any], advance: Callable[[float], None]) -> list[Cut]:
    """One segment in a fresh ``python -m scenescribe.shots.segments`` process (``workers``).
    The worker prints one JSON line per ``_PROGRESS_STEP`` frames it owns and a last line with
    its cuts."""
    with worker_process("scenescribe.shots.segments", job) as worker:
        assert worker.process.stdout is not None
        result: dict[str, Any] = {}
        for line in worker.process.stdout:
            result = json.loads(line)
            if "advance" in result:
                advance(result["advance"])
        if worker.process.wait() != 0 or "cuts" not in result:
            raise StageError(f"{job['path']}: shot detection of {job['start']:.0f}-{job['end']} "
                             f"s failed: {worker.failure()}")
    return [Cut(c[0], c[1], Transition.from_dict(c[2]) if len(c) > 2 else None)
            for c in result["cuts"]]


def detect_segment(detector: Any, path: str, fps: float, segment: Segment, threads: int,
                   advance: Callable[[float], None] | None = None,
                   tap: TickTap | None = None) -> list[Cut]:
    """Cuts with ``segment.start <= time < segment.end``; ``advance`` counts the frames owned;
    ``tap`` keeps the frames a later stage picks in the span."""
    from scenescribe.media import iter_frames

    frames = iter_frames(path, **detector.frame_format(), threads=threads,
                         start=max(0.0, segment.start - LEAD_SECONDS),
                         end=segment.end + LEAD_SECONDS, tap=tap)
    pending = 0

    def count_owned(frame: Any) -> Any:
        nonlocal pending
        if advance is not None and segment.start <= frame.time < segment.end:
            pending += 1
            if pending >= _PROGRESS_STEP:
                advance(pending)
                pending = 0
        return frame

    cuts = detector.cuts_from_frames(map(count_owned, frames), fps)
    if advance is not None and pending:
        advance(pending)
    return [c for c in cuts if segment.start <= c.time < segment.end]


def _worker_main() -> int:
    """Read a job (JSON) on stdin; print ``{"advance": n}`` lines, then ``{"cuts": [...]}``."""
    from scenescribe import registry
    from scenescribe.options import ShotOptions

    def report(frames: float) -> None:
        print(json.dumps({"advance": frames}), flush=True)

    job = json.loads(sys.stdin.read())
    lower_priority()
    if "small" in job:  # a shared decode's segment, which keeps TransNetV2's frames too
        from scenescribe.shots.shared_decode import worker_job

        cuts = worker_job(job, report)
    else:
        detector = registry.create(job["backend"], "shots",
                                   options=ShotOptions(**job["options"]))
        detector.load()
        segment = Segment(float(job["start"]), float(job["end"]))
        tap = tap_from_job(job.get("spool"))
        cuts = detect_segment(detector, job["path"], float(job["fps"]), segment,
                              int(job["threads"]), report, tap)
        if tap is not None:
            tap.close()
    print(json.dumps({"cuts": [[c.frame, c.time, *([c.transition.to_dict()] if c.transition else [])]
                               for c in cuts]}), flush=True)
    return 0


def lower_priority() -> None:
    """Run this worker below the parent's threads: the segment workers are bulk decoding, one
    per core, and beside them the parent feeds the GPU (Whisper's steps, the captioner's
    batches, TransNetV2's windows); a GPU waiting for a starved feeder costs more than a
    decode finishing a little later. ``SCENESCRIBE_SHOT_NICE`` sets the increment (0: none)."""
    step = env_count("SCENESCRIBE_SHOT_NICE")
    with contextlib.suppress(OSError, AttributeError):  # no os.nice on Windows
        os.nice(SHOT_NICE if step is None else step)


if __name__ == "__main__":
    sys.exit(_worker_main())
