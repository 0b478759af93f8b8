"""Per-scene frame sampling: chosen once, saved once as JPEG, shared by every later model.

The frames of every scene come from one sequential decode pass (``media.decode_pass``), and JPEG
encoding runs on a thread pool beside it (Pillow's encoder releases the GIL). With an object
tracker, ``sample_and_track`` saves the frames first, on a pass that seeks past what no scene
frame needs, then runs the tracker; or (``decode_once``) one pass serves both, the tracker's
frames at its own size, and a tracker that falls behind is served later by a follow-up pass.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from scenescribe.errors import InputError
from scenescribe.knobs import env_count, env_flag
from scenescribe.media import FrameRequest, Pick, SharedPass, decode_pass
from scenescribe.media.segments import auto_workers
from scenescribe.options import FrameOptions
from scenescribe.progress import Progress
from scenescribe.records import FrameRef, ObjectSummary, Scene, VideoInfo
from scenescribe.store import atomic_write_bytes

FRAMES_DIR = "frames"
TRACKER_QUEUE_BYTES = 256 * 2**20  # decoded frames the tracker may lag by (about 370 at 640x360)
FRAME_DECODERS_MAX = 4  # segment decoders side by side for the scene frames' own pass


def video_passes(videos: int) -> int:
    """Videos decoded side by side (``SCENESCRIBE_VIDEO_PASSES`` overrides).

    With one shared pass per video, one per 8 cores: a pass already runs
    ``segments.auto_workers()`` decoders, and past about 8 cores a second video's pass uses the
    rest better than more segments of the first. Frames first, one: each pass then has every
    core, and a tracker's decode never runs beside the next video's frames (the frames' seconds
    stay their own, and the stage's summed seconds count no overlap twice)."""
    passes = env_count("SCENESCRIBE_VIDEO_PASSES") or (
        (os.cpu_count() or 1) // 8 if decode_once() else 1)
    return max(1, min(videos, passes))


def decode_once() -> bool:
    """Whether the frames and the tracker share one decode pass (``SCENESCRIBE_DECODE_ONCE=1``)
    rather than the frames going first on a pass of their own (the default).

    One pass decodes every frame for the tracker's 2 fps, so the JPEGs are done only when the
    whole video is decoded; a pass of their own seeks past what no scene frame needs (on W1,
    5.2 s against 12.9 s on 16 cores). The tracker then decodes the video again, but after the
    frames, not in their way: about a third more decoding for frames done in half the time."""
    return env_flag("SCENESCRIBE_DECODE_ONCE")


def pass_share(passes: int, *, frames_only: bool = False) -> tuple[int, int]:
    """Decoders per video and FFmpeg threads per decoder when ``passes`` videos decode at once:
    the cores split between them. ``SCENESCRIBE_FRAME_WORKERS`` sets the decoders per video
    (the frames' passes only; ``SCENESCRIBE_DECODE_WORKERS`` sets every pass's).

    ``frames_only`` (a pass for the scene frames alone): one decoder per core up to
    ``FRAME_DECODERS_MAX``, the rest of the cores as FFmpeg threads inside them. Such a pass
    seeks every few dozen frames, and a seek empties a frame-threaded decoder's pipeline, so
    alone segments side by side use the cores better than threads inside one decoder
    (w1_sitcom on 2 cores: 2.0 s with two decoders of one thread, 2.5 s with one of two; W1 on
    the H200's 16: 5.38 s with sixteen of one thread against 5.69 s with four of four). But each
    decoder is a Python thread, and inside Stage 1 they take the interpreter from the threads
    that feed the GPU: with four of four the frames ended as soon (33.4 s against 34.9 s) and
    Whisper's batch took 10.9 s against 19.2 s (``results/h200-2026-12-04-n``). FFmpeg's own
    threads never hold the interpreter. A tracker's pass holds every frame at 2 fps and keeps
    ``auto_workers``."""
    cores = os.cpu_count() or 1
    per_pass = max(1, cores // passes)
    workers = env_count("SCENESCRIBE_FRAME_WORKERS") or (
        min(per_pass, FRAME_DECODERS_MAX) if frames_only else max(1, auto_workers() // passes))
    return workers, max(1, per_pass // workers)


def sample_times(scene: Scene, options: FrameOptions, fps: float) -> list[float]:
    """Times at ``options.positions`` of the scene, kept inside ``[start, end)``."""
    last = max(scene.start, scene.end - 0.5 / (fps or 25.0))
    return sorted({round(min(scene.start + p * scene.duration, last), 3) for p in options.positions})


def frame_path(scene: Scene, slot: int) -> str:
    """Relative path of a scene's sampled frame; stable across reruns."""
    return f"{FRAMES_DIR}/scene{scene.index:05d}_{slot}.jpg"


def frame_request(video: VideoInfo, scenes: Sequence[Scene], options: FrameOptions) -> FrameRequest:
    """The frames every scene needs: the frame on screen at each sample time, at ``short_side``."""
    times = [t for s in scenes for t in sample_times(s, options, video.fps)]
    return FrameRequest(tuple(times), short_side=options.short_side)


@dataclass
class FrameWaits:
    """Where the thread saving the frames waited: for decoded frames (``decode_s``), and for
    JPEGs still being encoded and written (``write_s``). Their sum near the stage's seconds
    says which side bounds it."""

    decode_s: float = 0.0
    write_s: float = 0.0


def sample_scene_frames(
    video: VideoInfo,
    scenes: Sequence[Scene],
    options: FrameOptions,
    out_dir: Path,
    progress: Progress,
    picks: Iterator[Pick] | None = None,
    workers: int | None = None,
    threads: int = 0,
    waits: FrameWaits | None = None,
) -> Iterator[tuple[int, list[FrameRef]]]:
    """Decode and save each scene's frames, yielding ``(scene index, frame refs)`` in order.

    ``picks`` comes from a pass shared with other consumers (``frame_request`` says what it must
    hold); without it this function runs its own pass. A scene is yielded once its JPEGs are on
    disk; memory holds the frames of the scenes in flight only. Audio-only input has none.
    ``waits``, when given, adds up where this thread waited.
    """
    task = progress.task("frames", total=len(scenes))
    try:
        if not video.has_video or not scenes:
            for scene in scenes:
                yield scene.index, []
                task.advance()
            return
        if picks is None:
            if workers is None:
                workers, threads = pass_share(1, frames_only=True)
            picks = decode_pass(video.path, [frame_request(video, scenes, options)],
                                workers=workers, threads=threads)
        for index, refs in _save(video, scenes, options, out_dir, picks,
                                 waits if waits is not None else FrameWaits()):
            yield index, refs
            task.advance()
    finally:
        task.close()


def _save(video: VideoInfo, scenes: Sequence[Scene], options: FrameOptions, out_dir: Path,
          picks: Iterator[Pick], waits: FrameWaits) -> Iterator[tuple[int, list[FrameRef]]]:
    slots: dict[float, list[tuple[Scene, int]]] = {}
    wanted = {s.index: sample_times(s, options, video.fps) for s in scenes}
    for scene in scenes:
        for slot, t in enumerate(wanted[scene.index]):
            slots.setdefault(t, []).append((scene, slot))
    written: dict[int, list[Future[None]]] = {s.index: [] for s in scenes}
    queue = deque(sorted(scenes, key=lambda s: (wanted[s.index][:1], s.index)))
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    in_flight = 4 * workers  # JPEGs waiting to be written: bounds the frames held in memory

    def complete(scene: Scene) -> bool:
        return len(written[scene.index]) == len(wanted[scene.index])

    with ThreadPoolExecutor(workers, thread_name_prefix="jpeg") as pool:
        try:
            pending = 0
            stream = iter(picks)
            while True:
                began = time.perf_counter()
                pick = next(stream, None)
                waits.decode_s += time.perf_counter() - began
                if pick is None:
                    break
                for scene, slot in slots.get(pick.time, ()):
                    written[scene.index].append(pool.submit(
                        _save_jpeg, pick.frame.image, out_dir / frame_path(scene, slot),
                        options.jpeg_quality))
                    pending += 1
                # Scenes finish in time order: hand each on once its JPEGs are written, waiting
                # for them only when too many are queued.
                while queue and complete(queue[0]) and (
                        pending > in_flight or all(f.done() for f in written[queue[0].index])):
                    pending -= len(written[queue[0].index])
                    yield _finished(queue.popleft(), wanted, written, waits)
        finally:
            close = getattr(picks, "close", None)
            if close is not None:
                close()
        while queue:
            scene = queue.popleft()
            if not complete(scene):
                raise InputError(video.path, f"no frame could be decoded for scene {scene.index} "
                                             f"at {wanted[scene.index]} s")
            yield _finished(scene, wanted, written, waits)


def _finished(scene: Scene, wanted: dict[int, list[float]],
              written: dict[int, list[Future[None]]],
              waits: FrameWaits) -> tuple[int, list[FrameRef]]:
    began = time.perf_counter()
    for future in written.pop(scene.index):
        future.result()  # re-raises a failed write
    waits.write_s += time.perf_counter() - began
    return scene.index, [FrameRef(time=t, path=frame_path(scene, slot))
                         for slot, t in enumerate(wanted[scene.index])]


def _save_jpeg(image: Any, path: Path, quality: int) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    # Not flushed to the disk one by one: on some disks each fsync waits for a journal commit
    # (about 15 ms), serialising the writers. A JPEG a crash cut off is found and sampled again
    # on resume (``stages.jpeg_intact``).
    atomic_write_bytes(path, buffer.getvalue(), durable=False)


def sample_and_track(
    video: VideoInfo,
    frame_scenes: Sequence[Scene],
    options: FrameOptions,
    out_dir: Path,
    tracker: Any,
    object_scenes: Sequence[Scene],
    progress: Progress,
    on_frames: Callable[[int, list[FrameRef]], None],
    on_objects: Callable[[int, list[ObjectSummary]], None],
    passes: int = 1,
    report: dict[str, Any] | None = None,
    shared: bool | None = None,
) -> tuple[float, float]:
    """The sampled frames saved and ``tracker`` run, the frames first (``decode_once``).

    ``frame_scenes`` and ``object_scenes`` are the scenes each still lacks (either may be empty).
    Results go to ``on_frames`` (this thread) and ``on_objects`` as they finish. The tracker
    must be loaded; ``passes`` says how many videos decode side by side (the cores are shared
    between them). Returns each part's seconds: the frames' until their JPEGs were written; the
    tracker's from its start, which is the frames' end, or with ``shared`` the same start.

    ``shared`` (default ``decode_once()``): one pass saves the frames and feeds the tracker on
    its own thread, so the GPU works while this thread writes JPEGs. The frames never wait for
    the tracker: its frames queue up to ``TRACKER_QUEUE_BYTES``, and
    when that is full the pass stops serving it and runs on at decode speed for the JPEGs; the
    tracker, once it has read its queue, gets the rest from a follow-up pass over only the part
    it missed (``report`` gets ``spilled_at``, the video time where that began, or None).
    """
    start = time.perf_counter()
    shared = decode_once() if shared is None else shared
    workers, threads = pass_share(passes, frames_only=not shared)
    if not (shared and video.has_video and object_scenes and frame_scenes):
        for index, refs in sample_scene_frames(video, frame_scenes, options, out_dir, progress,
                                               workers=workers, threads=threads):
            on_frames(index, refs)
        frames_s = time.perf_counter() - start
        if object_scenes:
            for index, summaries in tracker.track_scenes(video, object_scenes, progress):
                on_objects(index, summaries)
        if report is not None:
            report["spilled_at"] = None
        return frames_s, time.perf_counter() - start - frames_s
    one = SharedPass(video.path, threads=threads, workers=workers)
    frame_feed = one.subscribe([frame_request(video, frame_scenes, options)])
    object_feed = one.subscribe(tracker.frame_requests(video, object_scenes),
                                depth=_tracker_depth(video, tracker), spill=True)
    failure: list[BaseException] = []

    def track() -> None:
        try:
            for index, summaries in tracker.track_frames(video, object_scenes, object_feed,
                                                         progress):
                on_objects(index, summaries)
        except BaseException as exc:  # handed to the calling thread
            failure.append(exc)
        finally:
            object_feed.close()

    one.start()
    thread = threading.Thread(target=track, name="objects", daemon=True)
    thread.start()
    try:
        for index, refs in sample_scene_frames(video, frame_scenes, options, out_dir, progress,
                                               picks=frame_feed):
            on_frames(index, refs)
        frames_s = time.perf_counter() - start
    except BaseException:
        one.close()  # stop now: the tracker sees an error, never an early end of video
        raise
    finally:
        frame_feed.close()
        thread.join()
        one.close()
    if report is not None:
        report["spilled_at"] = object_feed.missed_from
    if failure:
        raise failure[0]
    return frames_s, time.perf_counter() - start


def _tracker_depth(video: VideoInfo, tracker: Any) -> int:
    """Picks the tracker may fall behind by: ``TRACKER_QUEUE_BYTES`` of its RGB frames."""
    side = int(getattr(getattr(tracker, "options", None), "imgsz", 640) or 640)
    aspect = min(video.width, video.height) / max(video.width, video.height, 1) or 1.0
    frame_bytes = 3 * side * side * aspect
    return int(min(4096, max(32, TRACKER_QUEUE_BYTES // max(frame_bytes, 1))))
