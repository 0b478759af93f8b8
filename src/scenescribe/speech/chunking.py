"""Audio cutting shared by the speech backends: long pieces cut at quiet points, and silence
gates. (The hallucination filter lives in ``guard``; its names are re-exported here for callers
not yet moved to ``guard.SpeechGuard``.)

A recognizer never holds a whole long file: ``stream_pieces`` reads the audio in blocks (10
minutes by default) and cuts each piece at the quietest moment near its end, carrying the rest
into the next piece. A word is only split when nothing in the search window is quieter than it,
so no overlap and no de-duplication of words is needed, and every time is on the video clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from scenescribe.media import SAMPLE_RATE, iter_audio_blocks
from scenescribe.speech.guard import is_annotation, is_hallucination, normalise

__all__ = ["frame_rms", "is_annotation", "is_hallucination", "is_silent", "normalise",
           "quietest_point", "split_at_silences", "stream_pieces"]

FRAME = SAMPLE_RATE // 100  # 10 ms energy frames
SMOOTH_FRAMES = 20  # a cut sits in the middle of the quietest 200 ms
SILENCE_DBFS = -55.0  # a chunk whose loudest 10 ms frame is quieter than this holds no speech


def frame_rms(samples: np.ndarray) -> np.ndarray:
    """Root-mean-square level of each whole 10 ms frame."""
    n = len(samples) // FRAME
    if n == 0:
        return np.zeros(0, np.float32)
    frames = samples[: n * FRAME].reshape(n, FRAME).astype(np.float32)
    return np.sqrt(np.mean(frames * frames, axis=1))


def quietest_point(samples: np.ndarray, lo: int, hi: int) -> int:
    """Sample index in ``[lo, hi]`` at the centre of the quietest 200 ms of that range."""
    lo, hi = max(0, lo), min(len(samples), hi)
    f_lo, f_hi = -(-lo // FRAME), hi // FRAME
    if f_hi - f_lo < SMOOTH_FRAMES:
        return hi
    energy = frame_rms(samples[f_lo * FRAME: f_hi * FRAME])
    smooth = np.convolve(energy, np.ones(SMOOTH_FRAMES, np.float32), mode="valid")
    # Prefer the latest of equally quiet spots (digital silence): pieces stay close to full.
    best = len(smooth) - 1 - int(np.argmin(smooth[::-1]))
    return (f_lo + best + SMOOTH_FRAMES // 2) * FRAME


def split_at_silences(samples: np.ndarray, max_len: int, search: int) -> list[tuple[int, int]]:
    """``[start, end)`` sample ranges at most ``max_len`` long, cut at the quietest point of
    the last ``search`` samples of each range."""
    ranges: list[tuple[int, int]] = []
    start = 0
    while len(samples) - start > max_len:
        end = start + max_len
        cut = quietest_point(samples, end - min(search, max_len // 2), end)
        ranges.append((start, cut))
        start = cut
    if start < len(samples):
        ranges.append((start, len(samples)))
    return ranges


def stream_pieces(path: str | Path, block_seconds: float = 600.0,
                  search_seconds: float = 30.0) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(start_seconds, samples)`` pieces of the 16 kHz mono audio that tile the file.

    Each piece but the last ends at the quietest point of its final ``search_seconds`` (at most
    half the block), so a piece is at most one block plus two search windows long (a carried
    start, and a short final block joined to the last piece); memory holds at most two blocks.
    A file without audio yields nothing.
    """
    blocks = iter_audio_blocks(path, SAMPLE_RATE, block_seconds)
    carry = np.zeros(0, np.float32)
    carry_start = 0.0
    upcoming = next(blocks, None)
    while upcoming is not None:
        start, block = upcoming
        upcoming = next(blocks, None)
        buf_start = carry_start if len(carry) else start
        buf = np.concatenate([carry, block]) if len(carry) else block
        search = int(min(search_seconds, block_seconds / 2) * SAMPLE_RATE)
        if upcoming is not None and len(upcoming[1]) < search:
            # Only the last block is short: join it rather than leave a sliver of a piece.
            buf, upcoming = np.concatenate([buf, upcoming[1]]), next(blocks, None)
        if upcoming is None:
            yield buf_start, buf
            return
        cut = quietest_point(buf, len(buf) - search, len(buf))
        yield buf_start, buf[:cut]
        carry, carry_start = buf[cut:], buf_start + cut / SAMPLE_RATE


def speech_chunks(path: str | Path, chunk_seconds: float = 30.0, chunk_search_seconds: float = 10.0,
                  block_seconds: float = 600.0, search_seconds: float = 30.0,
                  ) -> Iterator[tuple[float, np.ndarray, bool]]:
    """``(start_seconds, samples, silent)`` chunks of at most ``chunk_seconds`` that tile the
    file, each cut at the quietest point of its last ``chunk_search_seconds``; ``silent`` marks
    chunks that ``is_silent`` keeps from the model. Pieces stream as in ``stream_pieces``."""
    for start, samples in stream_pieces(path, block_seconds, search_seconds):
        for a, b in split_at_silences(samples, int(chunk_seconds * SAMPLE_RATE),
                                      int(chunk_search_seconds * SAMPLE_RATE)):
            silent = is_silent(samples[a:b])
            # A copy: a view would keep the whole piece (10 minutes) alive while it waits.
            yield start + a / SAMPLE_RATE, samples[a:b] if silent else samples[a:b].copy(), silent


def is_silent(samples: np.ndarray, dbfs: float = SILENCE_DBFS) -> bool:
    """True when no 10 ms frame reaches ``dbfs`` (digital silence, room tone)."""
    rms = frame_rms(samples)
    return rms.size == 0 or float(rms.max()) < 10 ** (dbfs / 20)
