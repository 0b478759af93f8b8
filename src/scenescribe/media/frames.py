"""Video frame decoding with threads, early downscaling and timestamp-based times."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from scenescribe.errors import InputError
from scenescribe.media.probe import _ffmpeg_reason, open_container

# Seek instead of decoding forward when the next wanted time is this far ahead.
SEEK_GAP_SECONDS = 4.0


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


def _to_rgb(frame: Any, size: tuple[int, int] | None, rotation: int) -> np.ndarray:
    if size is not None:
        w, h = size if rotation not in (90, 270) else (size[1], size[0])
        image = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
    else:
        image = frame.to_ndarray(format="rgb24")
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))
    return image


def _frame_time(frame: Any, stream: Any, origin: float) -> float | None:
    if frame.pts is None:
        return None
    return float(frame.pts * stream.time_base) - origin


def _open_video(path: str | Path, threads: int) -> tuple[Any, Any, float, int]:
    container = open_container(path)
    if not container.streams.video:
        container.close()
        raise InputError(path, "has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if threads:
        stream.codec_context.thread_count = threads
    origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    from scenescribe.media.probe import rotation_of

    return container, stream, origin, rotation_of(stream)


def iter_frames(
    path: str | Path,
    *,
    width: int | None = None,
    short_side: int | None = None,
    sample_fps: float | None = None,
    threads: int = 0,
    skip_nonkey: bool = False,
    start: float = 0.0,
    end: float | None = None,
    pixel_format: str = "rgb24",
) -> Iterator[DecodedFrame]:
    """Decode every frame (or ``sample_fps`` frames per second) in display order.

    Frames are shrunk inside FFmpeg's scaler before they reach numpy, so a 4K video costs the
    memory of its downscaled frames. Times come from timestamps, so variable frame rate works;
    a frame without a timestamp gets its predecessor's time plus the average frame interval.

    ``start``/``end`` (seconds) limit the frames to that span. A ``start`` above 0 seeks to the
    keyframe before it; frames decoded after a seek have no running count, so their ``index``
    is their time divided by the average frame interval (exact for constant frame rate).

    ``pixel_format="yuv420p"`` gives the decoder's planes as they are, one ``(H * 3 / 2, W)``
    array at full size, neither scaled nor rotated: FFmpeg's scaler costs more than decoding on
    small outputs, and a caller that shrinks the planes itself (shot detection) saves it.
    """
    container, stream, origin, rotation = _open_video(path, threads)
    if skip_nonkey:
        stream.codec_context.skip_frame = "NONKEY"
    step = float(1 / stream.average_rate) if stream.average_rate else 0.04
    size: tuple[int, int] | None = None
    next_sample = start
    last_time: float | None = -step
    seeked = start > 0
    if seeked:
        container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
        last_time = None
    try:
        with container:
            for count, frame in enumerate(container.decode(stream)):
                t = _frame_time(frame, stream, origin)
                if t is None:
                    t = (last_time + step) if last_time is not None else start
                t = max(t, 0.0)
                last_time = t
                if end is not None and t >= end:
                    break
                if t + 1e-6 < start:
                    continue
                index = round(t / step) if seeked else count
                if sample_fps is not None:
                    if t + 1e-6 < next_sample:
                        continue
                    next_sample = (int(t * sample_fps + 1e-6) + 1) / sample_fps
                if size is None and (width or short_side):
                    w, h = frame.width, frame.height
                    if rotation in (90, 270):
                        w, h = h, w
                    size = scaled_size(w, h, target_width=width, short_side=short_side)
                if pixel_format == "yuv420p":
                    image = frame.to_ndarray(format="yuv420p")
                else:
                    image = _to_rgb(frame, size, rotation)
                yield DecodedFrame(index, t, image)
    except av.error.FFmpegError as exc:
        raise InputError(path, f"video cannot be decoded ({_ffmpeg_reason(exc)})") from exc


def frames_at(
    path: str | Path,
    times: Sequence[float],
    *,
    short_side: int | None = None,
    threads: int = 0,
) -> dict[float, DecodedFrame]:
    """The frame on screen at each wanted time (the last frame starting at or before it).

    Wanted times are visited in order; a large gap triggers a keyframe seek, a small one decodes
    forward, so sampling a few frames per scene costs about one pass over the needed GOPs.
    """
    wanted = sorted(set(times))
    result: dict[float, DecodedFrame] = {}
    if not wanted:
        return result
    container, stream, origin, rotation = _open_video(path, threads)
    size: tuple[int, int] | None = None
    try:
        with container:
            pos = 0
            while pos < len(wanted):
                target = wanted[pos]
                seek_to = max(0.0, target - 0.5)
                container.seek(int((seek_to + origin) / stream.time_base), stream=stream,
                               backward=True, any_frame=False)
                prev = None
                served = False  # a seek lands on a keyframe that may be far before the target
                for frame in container.decode(stream):
                    t = _frame_time(frame, stream, origin)
                    t = 0.0 if t is None else max(t, 0.0)
                    while pos < len(wanted) and t > wanted[pos] + 1e-6:
                        chosen = prev if prev is not None else (frame, t)
                        if size is None and short_side:
                            size = _oriented_size(chosen[0], rotation, short_side)
                        result[wanted[pos]] = _decoded(chosen, size, rotation)
                        pos += 1
                        served = True
                    prev = (frame, t)
                    # Seek again only for a far target, and only after this seek served one:
                    # re-seeking before that would land on the same keyframe forever.
                    if pos >= len(wanted) or (served and wanted[pos] - t > SEEK_GAP_SECONDS):
                        break
                else:  # end of stream: the last frame covers every remaining time
                    while pos < len(wanted) and prev is not None:
                        if size is None and short_side:
                            size = _oriented_size(prev[0], rotation, short_side)
                        result[wanted[pos]] = _decoded(prev, size, rotation)
                        pos += 1
                    if prev is None:
                        raise InputError(path, f"no frame could be decoded near {target:.3f} s")
    except av.error.FFmpegError as exc:
        raise InputError(path, f"video cannot be decoded ({_ffmpeg_reason(exc)})") from exc
    return result


def _oriented_size(frame: Any, rotation: int, short_side: int) -> tuple[int, int]:
    w, h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
    return scaled_size(w, h, short_side=short_side)


def _decoded(chosen: tuple[Any, float], size: tuple[int, int] | None, rotation: int) -> DecodedFrame:
    frame, t = chosen
    index = -1  # display index is unknown after a seek; scenes carry frame numbers themselves
    return DecodedFrame(index, t, _to_rgb(frame, size, rotation))
