"""An open video stream and its frames: clock origin, frame step, rotation, damage, keyframes.

``VideoStream`` is what every decoding pass shares (``media.frames``, ``media.segments``, the
shot detectors' shared decode): frames in display order timed by their timestamps, seeks to
keyframes, and the dropping of frames a pass cannot need. ``to_rgb`` shrinks a frame inside
FFmpeg's scaler and turns it upright.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenescribe.errors import InputError
from scenescribe.media.damage import DamageLog, tolerant_decode
from scenescribe.media.probe import display_rotation, open_container

_KEYFRAMES: dict[tuple[str, int, int], list[float]] = {}  # a few files' keyframe times
_KEYFRAMES_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One decoded frame: its display-order index, time in seconds and RGB pixels (H, W, 3)."""

    index: int
    time: float
    image: np.ndarray


def scaled_size(width: int, height: int, *, target_width: int | None = None,
                short_side: int | None = None) -> tuple[int, int]:
    """Output size keeping aspect ratio, never upscaling, with even dimensions."""
    scale = 1.0
    if target_width:
        scale = min(1.0, target_width / width)
    elif short_side:
        scale = min(1.0, short_side / min(width, height))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def to_rgb(frame: Any, size: tuple[int, int] | None, rotation: int) -> np.ndarray:
    """RGB pixels, shrunk inside FFmpeg's scaler to ``size`` (upright), then turned upright."""
    if size is not None:
        w, h = size if rotation not in (90, 270) else (size[1], size[0])
        image = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
    else:
        image = frame.to_ndarray(format="rgb24")
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))
    return image


def upright_size(frame: Any, rotation: int, width: int | None,
                  short_side: int | None) -> tuple[int, int] | None:
    if not width and not short_side:
        return None
    w, h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
    return scaled_size(w, h, target_width=width, short_side=short_side)


class VideoStream:
    """An open video stream with what every pass needs: clock origin, frame step, rotation, damage."""

    def __init__(self, path: str | Path, threads: int) -> None:
        self.path = path
        self.container = open_container(path)
        if not self.container.streams.video:
            self.container.close()
            raise InputError(path, "has no video stream")
        stream = self.stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads; FFmpeg picks the count from cores
        if threads:
            stream.codec_context.thread_count = threads
        self.origin = (float(stream.start_time * stream.time_base)
                       if stream.start_time is not None else 0.0)
        self.step = float(1 / stream.average_rate) if stream.average_rate else 0.04
        self.damage = DamageLog(path, stream, self.origin)
        self.rotation: int | None = None  # from the first decoded frame's display matrix
        self.decoded_count = 0
        self.reached_end = False
        # Set by a pass that knows the next time it wants (``_walk``): frames shown well
        # before it need not be decoded unless other frames refer to them (``_discardable``).
        self.wanted = -math.inf
        self.latest_demuxed = -math.inf  # the latest time among packets read since the seek
        self.discarding = False  # a frame may have been dropped: counts no longer index

    def keyframes(self) -> list[float]:
        """Keyframe times from the container's index when it lists every frame (MP4, MOV), else
        ``[]``: a partial index (WebM cues, MPEG-PS) grows while reading and cannot plan seeks.

        Cached per file: reading a 2-hour index costs about 0.4 s, and a pass split into
        segments opens the file once per segment.
        """
        stat = Path(self.path).stat()
        key = (str(self.path), stat.st_size, stat.st_mtime_ns)
        with _KEYFRAMES_LOCK:
            if key in _KEYFRAMES:
                return _KEYFRAMES[key]
        entries = self.stream.index_entries
        frames = self.stream.frames
        found: list[float] = []
        if frames and len(entries) >= 0.9 * frames:
            tb = self.stream.time_base
            found = sorted(float(e.timestamp * tb) - self.origin for e in entries if e.is_keyframe)
        with _KEYFRAMES_LOCK:
            while len(_KEYFRAMES) >= 8:
                _KEYFRAMES.pop(next(iter(_KEYFRAMES)))
            _KEYFRAMES[key] = found
        return found

    def frames(self, first_time: float = 0.0,
               discard: bool = False) -> Iterator[tuple[Any, float]]:
        """``(frame, seconds)`` from the current position; a frame without a timestamp gets its
        predecessor's time plus the average frame interval. With ``discard``, frames that
        cannot matter to ``wanted`` are dropped undecoded where nothing refers to them."""
        last: float | None = None
        discardable = self._discardable if discard else None
        for frame in tolerant_decode(self.container, self.stream, self.damage, discardable):
            t = None if frame.pts is None else float(frame.pts * self.stream.time_base) - self.origin
            if t is None:
                t = last + self.step if last is not None else first_time
            t = max(t, 0.0)
            if self.rotation is None:
                self.rotation = display_rotation(frame, self.stream)
            self.damage.good(t, self.step)
            self.decoded_count += 1
            last = t
            yield frame, t
        self.reached_end = True

    def _discardable(self, packet: Any) -> bool:
        """Whether ``packet``'s frame cannot be the one on screen at ``wanted`` nor the first
        one after it: a packet read before it since the seek is shown after it and at or before
        ``wanted``. That later frame is decoded, or is itself discardable for the same reason,
        so the last frame shown at or before ``wanted`` always is (whatever the frame rate).
        In a B-frame stream about half the frames walking toward a far time go undecoded."""
        if packet.pts is None:
            return False
        t = float(packet.pts * self.stream.time_base) - self.origin
        later = self.latest_demuxed
        self.latest_demuxed = max(later, t)
        drop = t < later <= self.wanted
        self.discarding = self.discarding or drop
        return drop

    def seek(self, seconds: float) -> None:
        self.latest_demuxed = -math.inf  # packets read before the seek are not read again
        # round, not floor: a keyframe time turned back into its timestamp must hit it exactly,
        # or the backward seek lands one keyframe early
        target = round((max(0.0, seconds) + self.origin) / self.stream.time_base)
        self.container.seek(target, stream=self.stream, backward=True, any_frame=False)

    def close(self, kept: str) -> None:
        self.damage.finish(self.reached_end)
        self.damage.report(kept)
        self.container.close()
