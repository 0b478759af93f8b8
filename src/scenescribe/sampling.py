"""Per-scene frame sampling: chosen once, saved once as JPEG, shared by every later model."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image

from scenescribe.media import frames_at
from scenescribe.options import FrameOptions
from scenescribe.progress import Progress
from scenescribe.records import FrameRef, Scene, VideoInfo
from scenescribe.store import atomic_write_bytes

FRAMES_DIR = "frames"


def sample_times(scene: Scene, options: FrameOptions, fps: float) -> list[float]:
    """Times at ``options.positions`` of the scene, kept inside ``[start, end)``."""
    last = max(scene.start, scene.end - 0.5 / (fps or 25.0))
    return sorted({round(min(scene.start + p * scene.duration, last), 3) for p in options.positions})


def frame_path(scene: Scene, slot: int) -> str:
    """Relative path of a scene's sampled frame; stable across reruns."""
    return f"{FRAMES_DIR}/scene{scene.index:05d}_{slot}.jpg"


def sample_scene_frames(
    video: VideoInfo,
    scenes: Sequence[Scene],
    options: FrameOptions,
    out_dir: Path,
    progress: Progress,
    chunk: int = 32,
) -> Iterator[tuple[int, list[FrameRef]]]:
    """Decode and save each scene's frames, yielding ``(scene index, frame refs)`` in order.

    Scenes are handled in chunks so memory holds at most ``chunk`` scenes' frames; within a chunk
    one forward decode with keyframe seeks serves all wanted times. Audio-only input has none.
    """
    task = progress.task("frames", total=len(scenes))
    try:
        for begin in range(0, len(scenes), chunk):
            group = scenes[begin:begin + chunk]
            if not video.has_video:
                for scene in group:
                    yield scene.index, []
                    task.advance()
                continue
            wanted = {s.index: sample_times(s, options, video.fps) for s in group}
            decoded = frames_at(video.path, [t for ts in wanted.values() for t in ts],
                                short_side=options.short_side)
            for scene in group:
                refs = []
                for slot, t in enumerate(wanted[scene.index]):
                    rel = frame_path(scene, slot)
                    _save_jpeg(decoded[t].image, out_dir / rel, options.jpeg_quality)
                    refs.append(FrameRef(time=t, path=rel))
                yield scene.index, refs
                task.advance()
    finally:
        task.close()


def _save_jpeg(image, path: Path, quality: int) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    atomic_write_bytes(path, buffer.getvalue())
