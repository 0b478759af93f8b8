"""Audio decoding to mono float32 at a fixed rate, whole or as a stream of blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from scenescribe.errors import InputError
from scenescribe.media.damage import DamageLog, tolerant_decode
from scenescribe.media.probe import _ffmpeg_reason, open_container

SAMPLE_RATE = 16_000


def iter_audio_blocks(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    block_seconds: float = 30.0,
    start: float = 0.0,
    end: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(block_start_seconds, samples)`` of mono float32 in [-1, 1], ``block_seconds`` long.

    Memory holds one block at a time, so a 5-hour file streams in flat memory. The first block
    starts at ``start``; silence pads a stream that starts late so times stay on the video clock.
    """
    block = max(1, int(block_seconds * sample_rate))
    first = int(round(start * sample_rate))
    last = None if end is None else int(round(end * sample_rate))
    with open_container(path) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        if start > 1.0:
            container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream)
        pending: list[np.ndarray] = []
        pending_len = 0
        position: int | None = None  # sample index of pending[0][0] on the file's clock
        damage = DamageLog(path, stream)
        try:
            for samples_at, chunk in _resampled(container, stream, resampler, sample_rate,
                                                damage):
                if position is None:
                    position = samples_at
                    if position > first:  # stream starts late: pad with silence
                        pending.append(np.zeros(position - first, np.float32))
                        pending_len += position - first
                        position = first
                pending.append(chunk)
                pending_len += len(chunk)
                while pending_len - max(0, first - position) >= block:
                    data = np.concatenate(pending)
                    skip = max(0, first - position)
                    out = data[skip:skip + block]
                    out_start = position + skip
                    if last is not None and out_start >= last:
                        return
                    if last is not None:
                        out = out[: last - out_start]
                    yield out_start / sample_rate, out
                    rest = data[skip + block:]
                    position, pending, pending_len = out_start + block, [rest], len(rest)
                    first = position
        except av.error.FFmpegError as exc:  # the resampler, not a damaged packet
            raise InputError(path, f"audio cannot be decoded ({_ffmpeg_reason(exc)})") from exc
        damage.finish(reached_end=True)
        damage.report("the audio that decodes (silence in its place)")
        if position is None:
            return
        data = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        skip = max(0, first - position)
        out = data[skip:]
        out_start = position + skip
        if last is not None:
            out = out[: max(0, last - out_start)]
        if len(out):
            yield out_start / sample_rate, out


def _resampled(container, stream, resampler, sample_rate: int,
               damage: DamageLog) -> Iterator[tuple[int, np.ndarray]]:
    """Resampled mono chunks with the sample index where each starts.

    Packets the decoder rejects are skipped; the next good frame's timestamp re-anchors the
    clock and the gap is filled with silence, so later audio keeps its place in time.
    """
    cursor: int | None = None
    bad_seen = 0
    for frame in tolerant_decode(container, stream, damage):
        t = float(frame.time) if frame.time is not None else None
        if t is not None:
            damage.good(t, frame.samples / (frame.sample_rate or sample_rate))
        if cursor is None:
            cursor = max(0, int(round((t or 0.0) * sample_rate)))
        elif t is not None and damage.bad_packets > bad_seen:
            bad_seen = damage.bad_packets
            at = int(round(t * sample_rate))
            if at - cursor > sample_rate // 50:  # a gap of 20 ms or more: packets were lost
                yield cursor, np.zeros(at - cursor, np.float32)
                cursor = at
        for out in resampler.resample(frame):
            arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            yield cursor, arr
            cursor += len(arr)
    for out in resampler.resample(None):
        arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        yield cursor or 0, arr
        cursor = (cursor or 0) + len(arr)


def decode_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, start: float = 0.0, end: float | None = None
) -> np.ndarray:
    """The audio between ``start`` and ``end`` seconds as one mono float32 array.

    Returns an empty array when the file has no audio stream. For long files prefer
    ``iter_audio_blocks``, which keeps memory flat.
    """
    blocks = [b for _, b in iter_audio_blocks(path, sample_rate, 600.0, start, end)]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
