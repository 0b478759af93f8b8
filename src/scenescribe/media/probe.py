"""Probe a media file into a ``VideoInfo``, turning FFmpeg's failures into one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av

from scenescribe.errors import InputError
from scenescribe.records import AudioStreamInfo, VideoInfo


def open_container(path: str | Path) -> Any:
    """``av.open`` with FFmpeg's errors mapped to an ``InputError`` that names the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if p.is_dir():
        raise InputError(p, "is a directory, not a media file")
    if p.stat().st_size == 0:
        raise InputError(p, "file is empty (0 bytes)")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        if _looks_like_mp4(p):
            raise InputError(p, "truncated or damaged MP4: its index (moov atom) is missing "
                                "or unreadable") from exc
        raise InputError(p, f"not a media file FFmpeg can read ({_ffmpeg_reason(exc)})") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(p, f"cannot open: {_ffmpeg_reason(exc)}") from exc


def _looks_like_mp4(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(12)
    return head[4:8] == b"ftyp"


def _ffmpeg_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    if "moov atom not found" in str(exc):
        return "truncated MP4: its index (moov atom) is missing"
    return text.splitlines()[0] if text else type(exc).__name__


def rotation_of(stream: Any) -> int:
    """Display rotation in degrees clockwise (0, 90, 180, 270) from metadata or side data."""
    rotate = stream.metadata.get("rotate")
    if rotate:
        try:
            return int(float(rotate)) % 360
        except ValueError:
            pass
    return 0


def probe(path: str | Path) -> VideoInfo:
    """Duration, frame rate, size, rotation and audio streams; raises ``InputError`` on bad input.

    The first video frame is decoded as a check, so a file that opens but cannot decode fails
    here with its name rather than deep inside a stage.
    """
    p = Path(path)
    with open_container(p) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = tuple(
            AudioStreamInfo(s.index, s.codec_context.name, int(s.codec_context.sample_rate or 0),
                            int(s.codec_context.channels or 0))
            for s in container.streams.audio)
        if video is None and not audio:
            raise InputError(p, "has neither a video nor an audio stream")
        duration = _duration(container, video or container.streams.audio[0])
        if video is None:
            return VideoInfo(str(p), p.stat().st_size, container.format.name, duration,
                             has_video=False, audio_streams=audio)
        rotation, first_pts = _check_first_frame(p, container, video)
        fps = float(video.average_rate or video.guessed_rate or 0) or 25.0
        width, height = video.codec_context.width, video.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        start = float(video.start_time * video.time_base) if video.start_time is not None else (
            first_pts)
        frames = int(video.frames) if video.frames else max(1, round(duration * fps))
        return VideoInfo(str(p), p.stat().st_size, container.format.name, duration, True,
                         width, height, fps, frames, rotation, video.codec_context.name,
                         start, audio)


def _duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if seconds > 0:
            return seconds
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    raise InputError(container.name, "duration unknown: the file has no timing information")


def _check_first_frame(p: Path, container: Any, video: Any) -> tuple[int, float]:
    try:
        for frame in container.decode(video):
            rotation = int(getattr(frame, "rotation", 0) or 0) % 360 or rotation_of(video)
            return (-rotation) % 360 if rotation < 0 else rotation, float(frame.time or 0.0)
    except av.error.FFmpegError as exc:
        raise InputError(p, f"video stream cannot be decoded ({_ffmpeg_reason(exc)})") from exc
    raise InputError(p, "video stream holds no decodable frame")
