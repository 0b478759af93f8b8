"""Video frame decoding: threaded, tolerant of damage, upright, shrunk early, timed by timestamps.

``iter_frames`` walks every frame (or ``sample_fps`` of them) for shot detection. ``decode_pass``
serves several consumers in one sequential pass: each ``FrameRequest`` names its wanted times, how
a time maps to a frame, and its own output size; the pass decodes forward and seeks only when a
keyframe lies between where it is and the next wanted time (so no frame is decoded twice and no
GOP is decoded for nothing). ``frames_at`` is the one-request case.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scenescribe.errors import InputError
from scenescribe.media.stream import DecodedFrame, VideoStream, to_rgb, upright_size

if TYPE_CHECKING:
    from scenescribe.media.spool import TickTap

# Without a keyframe index, seek instead of decoding forward when the next wanted time is this
# far ahead (the seek may land on an early keyframe, so it must be worth the gamble).
SEEK_GAP_SECONDS = 4.0
# With a keyframe index, seek when the keyframe before the next wanted time is this far ahead:
# a seek flushes the threaded decoder, which costs a few frames of work.
SEEK_MIN_GAIN_SECONDS = 0.5
# Wanted times are rounded to the millisecond, so a frame starting within half a millisecond
# after a wanted time is the one on screen (a scene starting at a cut gets the cut's frame).
TIME_TOLERANCE = 0.0005 + 1e-6

SHOWN = "shown"  # the frame on screen at the time: the last one starting at or before it
TICK = "tick"  # the first frame starting at or after the time; one frame serves every tick it covers


@dataclass(frozen=True, slots=True)
class FrameRequest:
    """What one consumer wants from a pass: frames at ``times`` under ``rule``, at its own size."""

    times: Sequence[float]
    rule: str = SHOWN
    short_side: int | None = None
    width: int | None = None


@dataclass(frozen=True, slots=True)
class Pick:
    """A frame chosen for ``request`` (its position in the pass's list) at wanted ``time``."""

    request: int
    time: float
    frame: DecodedFrame


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
    tap: TickTap | None = None,
) -> Iterator[DecodedFrame]:
    """Decode every frame (or ``sample_fps`` frames per second) in display order.

    Frames are shrunk inside FFmpeg's scaler before they reach numpy, so a 4K video costs the
    memory of its downscaled frames, and turned upright by the display matrix. Times come from
    timestamps, so variable frame rate works. Damaged packets cost only their own frames (one
    warning names the file and span).

    ``start``/``end`` (seconds) limit the frames to that span. A ``start`` above 0 seeks to the
    keyframe before it; frames decoded after a seek have no running count, so their ``index``
    is their time divided by the average frame interval (exact for constant frame rate).

    ``pixel_format="yuv420p"`` gives the decoder's planes as they are, one ``(H * 3 / 2, W)``
    array at full size, neither scaled nor rotated: FFmpeg's scaler costs more than decoding on
    small outputs, and a caller that shrinks the planes itself (shot detection) saves it.

    ``tap`` is offered every decoded frame (``media.spool``: another stage's frames kept from
    this decode).
    """
    video = VideoStream(path, threads)
    if skip_nonkey and tap is not None:
        raise ValueError("a tap needs every frame decoded")
    if skip_nonkey:
        video.stream.codec_context.skip_frame = "NONKEY"
    size: tuple[int, int] | None = None
    next_sample = start
    seeked = start > 0
    if seeked:
        video.seek(start)
    yielded = 0
    try:
        for count, (frame, t) in enumerate(video.frames(start)):
            if end is not None and t >= end:
                break
            if tap is not None:
                tap.offer(frame, t, video.rotation or 0)
            if t + 1e-6 < start:
                continue
            if sample_fps is not None:
                if t + 1e-6 < next_sample:
                    continue
                next_sample = (int(t * sample_fps + 1e-6) + 1) / sample_fps
            rotation = video.rotation or 0
            if size is None:
                size = upright_size(frame, rotation, width, short_side)
            yielded += 1
            image = (frame.to_ndarray(format="yuv420p") if pixel_format == "yuv420p"
                     else to_rgb(frame, size, rotation))
            yield DecodedFrame(round(t / video.step) if seeked else count, t, image)
    finally:
        video.close(f"the {yielded} frames that decode")


class _Want:
    """One request's cursor over its sorted wanted times, and its output size."""

    def __init__(self, request: FrameRequest) -> None:
        if request.rule not in (SHOWN, TICK):
            raise ValueError(f"unknown frame rule {request.rule!r}")
        self.request = request
        self.times = sorted(set(request.times))
        self.pos = 0
        self.size: tuple[int, int] | None = None

    @property
    def next(self) -> float | None:
        return self.times[self.pos] if self.pos < len(self.times) else None


def decode_pass(path: str | Path, requests: Sequence[FrameRequest], *, threads: int = 0,
                workers: int | None = None) -> Iterator[Pick]:
    """Serve every request in one forward pass over the video, picks in frame-time order.

    ``SHOWN`` times each get the frame on screen then (the last frame at the end of the stream
    covers later times); ``TICK`` times each get the first frame at or after them, one pick per
    frame. A pick's image has its request's size; one frame converted for several times of a
    request is converted once. Raises ``InputError`` when nothing at all decodes.

    ``workers`` above 1 (default: one per eight cores) decodes time segments side by side
    (``media.segments``), with the same picks in the same order.
    """
    wants = [_Want(r) for r in requests]
    if all(w.next is None for w in wants):
        return
    from scenescribe.media import segments  # imports this module

    workers = segments.auto_workers() if workers is None else workers
    if workers > 1:
        yield from segments.parallel_pass(path, requests, workers, threads)
        return
    video = VideoStream(path, threads)
    picked = 0
    try:
        for pick in _walk(video, wants):
            picked += 1
            yield pick
        if video.decoded_count == 0:
            raise InputError(path, "no video frame could be decoded")
    finally:
        video.close(f"what decodes ({picked} frames picked)")


def _walk(video: VideoStream, wants: list[_Want]) -> Iterator[Pick]:
    keyframes = video.keyframes()
    frames = video.frames(discard=True)
    prev: list[Any] | None = None  # [frame, time, {size: DecodedFrame}, index] last decoded
    position = 0.0  # where decoding stands: time of the last decoded frame
    floor = -1.0  # the last seek's target: seeking there or before again could loop forever
    seeked = False
    while True:
        need = min((w.next for w in wants if w.next is not None), default=None)
        if need is None:
            return
        video.wanted = need
        target = _seek_target(need, position, keyframes, floor)
        if target is not None:
            frames = _reseek(video, frames, target)
            prev, seeked, floor = None, True, target
            frames = _or_back_to(video, frames, position)
        try:
            frame, t = next(frames)
            if target is not None and keyframes and t > need + TIME_TOLERANCE:
                # Landed on a keyframe shown after ``need``: the frame on screen then lies in
                # the GOP before, so go back one more keyframe.
                earlier = bisect.bisect_right(keyframes, t) - 2
                if earlier >= 0:
                    frames = _reseek(video, frames, keyframes[earlier])
                    frame, t = next(frames)
            elif target is not None and not keyframes and t < position - 1e-6:
                floor = math.inf  # a blind seek landed behind us: decode forward from now on
        except StopIteration:
            break
        position = t
        index = round(t / video.step) if seeked or video.discarding else video.decoded_count - 1
        current: list[Any] = [frame, t, {}, index]
        for i, want in enumerate(wants):
            if want.request.rule == SHOWN:
                while want.next is not None and t > want.next + TIME_TOLERANCE:
                    chosen = prev if prev is not None else current
                    yield Pick(i, want.next, _convert(video, chosen, want))
                    want.pos += 1
            elif want.next is not None and t + 1e-6 >= want.next:
                yield Pick(i, want.next, _convert(video, current, want))
                while want.next is not None and want.next <= t + 1e-6:
                    want.pos += 1
        prev = current
    for i, want in enumerate(wants):  # end of stream: the last frame stays on screen
        while prev is not None and want.request.rule == SHOWN and want.next is not None:
            yield Pick(i, want.next, _convert(video, prev, want))
            want.pos += 1


def _or_back_to(video: VideoStream, frames: Iterator[tuple[Any, float]],
                position: float) -> Iterator[tuple[Any, float]]:
    """``frames``, or, when the seek found nothing (an index pointing past a cut-off tail),
    decoding forward again from ``position`` so the frames that exist still serve."""
    try:
        first = next(frames)
    except StopIteration:
        return _reseek(video, frames, position)
    return _prepend(first, frames)


def _prepend(first: tuple[Any, float],
             rest: Iterator[tuple[Any, float]]) -> Iterator[tuple[Any, float]]:
    yield first
    yield from rest  # closing this closes ``rest`` too


def _reseek(video: VideoStream, frames: Iterator[tuple[Any, float]],
            target: float) -> Iterator[tuple[Any, float]]:
    frames.close()  # type: ignore[attr-defined]
    video.seek(target)
    return video.frames(target, discard=True)


def _seek_target(need: float, position: float, keyframes: list[float],
                 floor: float) -> float | None:
    """Where to seek before decoding toward ``need``, or None to decode forward."""
    if keyframes:
        # The index gives decode times; a seek compares presentation times, which come a frame
        # or two later. So seek to ``need`` itself: FFmpeg lands on the last keyframe shown at
        # or before it (seeking to the keyframe's decode time would land one keyframe early).
        k = bisect.bisect_right(keyframes, need + TIME_TOLERANCE) - 1
        if k >= 0 and keyframes[k] > position + SEEK_MIN_GAIN_SECONDS and need > floor:
            return need
        return None
    target = need - 0.5  # a little early: the keyframe before may show just before ``need``
    if need - position > SEEK_GAP_SECONDS and target > floor:
        return target
    return None


def _convert(video: VideoStream, chosen: list[Any], want: _Want) -> DecodedFrame:
    frame, t, cache, index = chosen
    rotation = video.rotation or 0
    if want.size is None:
        want.size = upright_size(frame, rotation, want.request.width, want.request.short_side)
    if want.size not in cache:
        cache[want.size] = DecodedFrame(index, t, to_rgb(frame, want.size, rotation))
    return cache[want.size]


def frames_at(
    path: str | Path,
    times: Sequence[float],
    *,
    short_side: int | None = None,
    threads: int = 0,
) -> dict[float, DecodedFrame]:
    """The frame on screen at each wanted time (the last frame starting at or before it)."""
    request = FrameRequest(tuple(times), SHOWN, short_side=short_side)
    return {p.time: p.frame for p in decode_pass(path, [request], threads=threads)}
