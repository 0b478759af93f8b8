"""A video's untracked detections at its sampling ticks, kept between the two object stages.

Detection needs no scenes: every ``1 / sample_fps`` tick of the whole video is looked at, so the
``detections`` stage's output outlives new shot settings, and the ``objects`` stage only runs
ByteTrack over the stored boxes once the cuts are known. The ticks are numbered from 0 and grouped in
chunks of ``CHUNK_TICKS``: a chunk is the unit of the checkpoint, so a crash loses at most one
chunk's detections. Boxes are float32 and go through JSON exactly (a float32 widened to a float
prints back to the same float32), so tracking stored boxes gives what tracking fresh ones gives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scenescribe.records import Scene

CHUNK_TICKS = 120  # ticks per checkpoint line: a minute of video at 2 fps
BOX_FIELDS = 6  # x1, y1, x2, y2 (pixels of the frame as decoded), confidence, class id
_EPS = 1e-6


@dataclass(frozen=True, slots=True, eq=False)
class FrameBoxes:
    """The untracked detections of the frame shown from ``time`` on, picked for ``tick`` (the
    first tick it serves; -1 for a frame looked at outside the ticks). ``boxes`` is (N, 6)
    float32 (``BOX_FIELDS``); ``shape`` is the frame's (height, width) as it was detected;
    ``warp`` the camera's motion since the previous sampled frame (2x3), where the tracker
    compensates it."""

    tick: int
    time: float
    boxes: np.ndarray
    shape: tuple[int, int]
    warp: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != BOX_FIELDS:
            raise ValueError(f"boxes must be (N, {BOX_FIELDS}), got {self.boxes.shape}")
        if self.warp is not None and self.warp.shape != (2, 3):
            raise ValueError(f"a warp is 2x3, got {self.warp.shape}")

    @classmethod
    def create(cls, tick: int, time: float, boxes: Any, shape: Sequence[int],
               warp: Any = None) -> FrameBoxes:
        data = np.asarray(boxes, np.float32).reshape(-1, BOX_FIELDS)
        height, width = (int(v) for v in shape)
        return cls(int(tick), float(time), data, (height, width),
                   None if warp is None else np.asarray(warp, np.float64))

    def to_list(self) -> list[Any]:
        item = [self.tick, self.time, list(self.shape), self.boxes.tolist()]
        return item if self.warp is None else [*item, self.warp.tolist()]

    @classmethod
    def from_list(cls, item: Any) -> FrameBoxes:
        """From ``to_list``'s form; ``ValueError`` when it is not that."""
        form = "a frame is [tick, time, [height, width], boxes(, warp)]"
        if not isinstance(item, list) or len(item) not in (4, 5) or not isinstance(item[0], int):
            raise ValueError(form)
        tick, time, shape, boxes = item[:4]
        if not isinstance(shape, list) or len(shape) != 2 or not isinstance(boxes, list):
            raise ValueError(form)
        frame = cls.create(tick, float(time), boxes if boxes else np.zeros((0, BOX_FIELDS)),
                           shape, item[4] if len(item) == 5 else None)
        finite = [np.isfinite(frame.boxes).all(), frame.warp is None or np.isfinite(frame.warp).all()]
        if not math.isfinite(frame.time) or not all(finite) or min(frame.shape) < 1:
            raise ValueError("a frame's time, size, boxes and warp must be finite and positive")
        return frame


@dataclass(frozen=True)
class VideoDetections:
    """A video's detected frames in time order, and the detector's class names by id."""

    frames: Sequence[FrameBoxes]
    names: Mapping[int, str]


def tick_count(duration: float, fps: float) -> int:
    """Ticks ``k / fps`` inside ``[0, duration)``."""
    return max(0, math.ceil(duration * fps - _EPS))


def scene_ticks(scenes: Iterable[Scene], fps: float) -> list[int]:
    """The ticks that sample ``scenes``: from the one at or before each start (its frame may be
    the scene's first) to the last before its end."""
    ticks: set[int] = set()
    for scene in scenes:
        ticks.update(range(int(scene.start * fps + _EPS), math.ceil(scene.end * fps - _EPS)))
    return sorted(ticks)


def chunk_line(index: int, frames: Sequence[FrameBoxes]) -> dict[str, Any]:
    """A checkpoint line: chunk ``index`` and its frames."""
    return {"index": index, "frames": [f.to_list() for f in frames]}


def parse_chunk(line: Mapping[str, Any]) -> list[FrameBoxes]:
    """A checkpoint line's frames; ``ValueError`` when the line is not ``chunk_line``' form."""
    frames = line.get("frames")
    if not isinstance(frames, list):
        raise ValueError("a chunk holds a list of frames")
    return [FrameBoxes.from_list(f) for f in frames]


def in_time_order(frames: Iterable[FrameBoxes]) -> list[FrameBoxes]:
    """One entry per frame time, in order: a frame that served ticks on both sides of a chunk
    boundary (video below ``sample_fps``) was detected twice in a resumed run."""
    unique: dict[float, FrameBoxes] = {}
    for frame in frames:
        unique.setdefault(frame.time, frame)
    return [unique[t] for t in sorted(unique)]


def frames_by_scene(scenes: Sequence[Scene], frames: Sequence[FrameBoxes]
                    ) -> list[list[FrameBoxes]]:
    """For each scene (sorted by start), the frames whose time lies in ``[start, end)``."""
    times = np.fromiter((f.time for f in frames), np.float64, len(frames))
    out = []
    for scene in scenes:
        lo, hi = np.searchsorted(times, [scene.start, scene.end], side="left")
        out.append(list(frames[int(lo):int(hi)]))
    return out
