"""Per-scene frame sampling: chosen once, saved once as JPEG, shared by every later model.

The frames of every scene come from one decode pass (``media.decode_pass``) that seeks past
what no scene frame needs, and JPEG encoding runs on a thread pool beside it (Pillow's encoder
releases the GIL). The object detector decodes on its own, before the cuts are known
(``objects_stages``).
"""

from __future__ import annotations

import io
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from scenescribe.errors import InputError
from scenescribe.knobs import env_count
from scenescribe.media import FrameRequest, Pick, decode_pass
from scenescribe.options import FrameOptions
from scenescribe.progress import Progress
from scenescribe.records import FrameRef, Scene, VideoInfo
from scenescribe.store import atomic_write_bytes

FRAMES_DIR = "frames"
FRAME_DECODERS_MAX = 4  # segment decoders side by side for the scene frames' own pass


def frame_pass_share() -> tuple[int, int]:
    """Decoders and FFmpeg threads per decoder for the scene frames' pass:
    ``SCENESCRIBE_FRAME_WORKERS`` decoders, by default one per core up to
    ``FRAME_DECODERS_MAX``, the rest of the cores as FFmpeg threads inside them.

    Such a pass seeks every few dozen frames, and a seek empties a frame-threaded decoder's
    pipeline, so alone segments side by side use the cores better than threads inside one
    decoder (w1_sitcom on 2 cores: 2.0 s with two decoders of one thread, 2.5 s with one of
    two; W1 on the H200's 16: 5.38 s with sixteen of one thread against 5.69 s with four of
    four). But each decoder is a Python thread, and inside Stage 1 they take the interpreter
    from the threads that feed the GPU: with four of four the frames ended as soon (33.4 s
    against 34.9 s) and Whisper's batch took 10.9 s against 19.2 s
    (``results/h200-2026-12-04-n``). FFmpeg's own threads never hold the interpreter."""
    cores = os.cpu_count() or 1
    workers = env_count("SCENESCRIBE_FRAME_WORKERS") or min(cores, FRAME_DECODERS_MAX)
    return workers, max(1, cores // workers)


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
                workers, threads = frame_pass_share()
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
