"""Probe a media file into a ``VideoInfo``, turning FFmpeg's failures into one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
from av.sidedata.sidedata import Type as SideDataType

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
    """Clockwise degrees from the stream's legacy ``rotate`` tag (0 when absent or unreadable).

    Any case: MP4 read by older FFmpeg says ``rotate``, Matroska keeps tags as ``ROTATE``.
    """
    rotate = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
    if rotate:
        try:
            return _quarter_turns(float(rotate))
        except ValueError:
            pass
    return 0


def display_rotation(frame: Any, stream: Any) -> int:
    """Clockwise degrees (0, 90, 180, 270) to turn ``frame`` upright for display.

    The one source of truth for rotation: the frame's display matrix (which FFmpeg attaches to
    every decoded frame from the container's matrix), else the stream's old ``rotate`` tag.
    Flips in the matrix are ignored. ``VideoFrame.rotation`` is counter-clockwise, the tag
    clockwise; both are turned into the clockwise turn the picture needs.
    """
    if _has_display_matrix(frame):
        return _quarter_turns(-float(frame.rotation))
    return rotation_of(stream)


def _has_display_matrix(frame: Any) -> bool:
    try:
        return any(sd.type == SideDataType.DISPLAYMATRIX for sd in frame.side_data)
    except (AttributeError, TypeError):  # a frame type or PyAV build without side data
        return False


def _quarter_turns(degrees: float) -> int:
    return (int(round(degrees / 90.0)) * 90) % 360


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
    """Rotation and time of the first frame that decodes: damage at the start is skipped (the
    decoders report it), a stream where nothing decodes fails here, naming the file."""
    from scenescribe.media.damage import DamageLog, tolerant_decode  # imports this module's kin

    damage = DamageLog(p, video)
    for frame in tolerant_decode(container, video, damage):
        return display_rotation(frame, video), float(frame.time or 0.0)
    damage.finish(reached_end=False)
    why = f" ({damage.spans[0].reason})" if damage.spans else ""
    raise InputError(p, f"video stream cannot be decoded: no frame decodes{why}")
