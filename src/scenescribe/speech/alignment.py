"""Word timestamps from Whisper's cross-attention, as openai-whisper computes them.

The attention weights of the checkpoint's *alignment heads* over the encoder frames (20 ms
each), for the positions of the tokens the decoder produced (kept while decoding, or from a
teacher-forced pass after ``generate``: ``token_scores``), are normalised, median-filtered and
averaged (``alignment_heads``, in torch on the model's device), and dynamic time warping finds
the monotonic path from tokens to frames (numpy, here; for a batch in a process of its own,
``dtw_child``). A word starts where the path reaches its first token.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

FRAMES_PER_SECOND = 50  # encoder output frames: 20 ms each
# Languages written without spaces: each character-level unit is a word.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
_APPEND = "\"'.。,，!！?？:：”)]}、"
_PREPEND = "\"'“¿([{-"
_SENTENCE_END = tuple(".。!！?？")


@dataclass(frozen=True, slots=True)
class TimedWord:
    """A word on its chunk's clock (seconds from the chunk start) with its mean token prob."""

    text: str
    start: float
    end: float
    probability: float


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotonic path through ``cost`` (rows: tokens, columns: frames).

    Same recurrence and tie-breaking intent as openai-whisper's ``dtw_cpu`` (moves: diagonal,
    down, right), but each row is computed with numpy: within a row, the best cost reaching
    column ``j`` is ``P[j] + min_{k<=j}(a[k] - P[k-1])`` with ``P`` the row's prefix sums and
    ``a`` the best entry from the row above, so a cumulative minimum replaces the inner loop.
    """
    return _backtrace(_batch_trace(np.asarray(cost, dtype=np.float64)[None])[0])


def _backtrace(trace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    rows, cols = [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        move = trace[i, j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    path = np.array([rows[::-1], cols[::-1]])
    keep = (path[0] >= 0) & (path[1] >= 0)
    return path[0][keep], path[1][keep]


def token_frames(matrix: np.ndarray) -> np.ndarray:
    """Frame (20 ms) at which each row's token begins.

    ``matrix``: ``[rows, frames]``, the alignment heads' attention over the chunk's real frames,
    normalised over rows, median-filtered over frames and averaged over heads (done on the
    model's device, see the backend). Rows are the decoder positions that predict the text
    tokens and the final end-of-text token.
    """
    rows, frames = matrix.shape
    if frames < rows:  # more tokens than 20 ms frames: no path exists; spread them evenly
        return np.linspace(0, frames, rows).astype(int)
    path_rows, cols = dtw_path(-matrix.astype(np.float64))
    jumps = np.concatenate([[True], np.diff(path_rows) > 0])
    return cols[jumps]


def token_frames_batch(matrices: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``token_frames`` of many matrices at once: the DTW recurrence for the whole batch in one
    pass over rows (``dtw_path``'s row formula on ``[batch, frames]`` arrays; zero padding below
    and right of each matrix, which no cell of its own reads), then each path traced back from
    its own last cell. About 2,000 numpy calls for a batch instead of about 2,250 per chunk
    (W1's 45 chunks of 225 x 1,500: 0.4 s on this project's CPU machine, against 0.6-3.8 s
    chunk by chunk). ``dtw_child`` runs it in a process of its own (see there)."""
    out: list[np.ndarray | None] = [None] * len(matrices)
    warp = []
    for k, matrix in enumerate(matrices):
        rows, frames = matrix.shape
        if frames < rows:  # no path exists: as ``token_frames``
            out[k] = np.linspace(0, frames, rows).astype(int)
        else:
            warp.append(k)
    if warp:
        n = max(matrices[k].shape[0] for k in warp)
        m = max(matrices[k].shape[1] for k in warp)
        cost = np.zeros((len(warp), n, m))
        for b, k in enumerate(warp):
            rows, frames = matrices[k].shape
            cost[b, :rows, :frames] = -matrices[k]
        trace = _batch_trace(cost)
        for b, k in enumerate(warp):
            rows, frames = matrices[k].shape
            path_rows, cols = _backtrace(trace[b, : rows + 1, : frames + 1])
            jumps = np.concatenate([[True], np.diff(path_rows) > 0])
            out[k] = cols[jumps]
    return [f for f in out if f is not None]


def _batch_trace(cost: np.ndarray) -> np.ndarray:
    """The moves (0 diagonal, 1 down, 2 right) of ``dtw_path`` for every ``[rows, frames]``
    matrix of ``cost`` at once, one numpy pass per row for the whole batch."""
    batch, n, m = cost.shape
    trace = np.full((batch, n + 1, m + 1), 2, np.int8)  # 0 diagonal, 1 down, 2 right
    trace[:, 1:, 0] = 1
    prefix = np.zeros((batch, n, m + 1))
    np.cumsum(cost, axis=2, out=prefix[:, :, 1:])
    above = np.full((batch, m + 1), np.inf)
    above[:, 0] = 0.0
    for i in range(1, n + 1):
        diag, up = above[:, :-1], above[:, 1:]
        row_prefix = prefix[:, i - 1]
        b = np.minimum(diag, up) - row_prefix[:, :-1]
        best = np.minimum.accumulate(b, axis=1)
        moves = trace[:, i, 1:]
        moves[...] = up <= diag  # 0 diagonal where strictly better, else 1 down
        moves[:, 1:][best[:, :-1] < b[:, 1:]] = 2
        above = np.empty_like(above)
        above[:, 0] = np.inf
        above[:, 1:] = row_prefix[:, 1:] + best
    return trace


def group_words(tokens: Sequence[int], decode: Callable[[list[int]], str],
                language: str | None) -> list[tuple[str, list[int]]]:
    """Split text tokens into ``(word, token indices)``: on spaces, or per character unit."""
    units: list[tuple[str, list[int]]] = []
    pending: list[int] = []
    for index in range(len(tokens)):
        pending.append(index)
        text = decode([tokens[k] for k in pending])
        if "\ufffd" not in text:  # a complete UTF-8 sequence
            units.append((text, pending))
            pending = []
    if language in NO_SPACE_LANGUAGES:
        return units
    words: list[tuple[str, list[int]]] = []
    for text, indices in units:
        starts_word = text.startswith(" ") or text.strip() in string.punctuation
        if starts_word or not words:
            words.append((text, list(indices)))
        else:
            words[-1] = (words[-1][0] + text, words[-1][1] + indices)
    return _merge_punctuation(words)


def _merge_punctuation(words: list[tuple[str, list[int]]]) -> list[tuple[str, list[int]]]:
    """Glue closing punctuation to the word before and opening punctuation to the word after."""
    merged: list[tuple[str, list[int]]] = []
    carry: tuple[str, list[int]] | None = None
    for text, indices in words:
        if carry is not None:
            text, indices = carry[0] + text.lstrip(), carry[1] + indices
            carry = None
        stripped = text.strip()
        if stripped and all(c in _APPEND for c in stripped) and merged:
            merged[-1] = (merged[-1][0] + stripped, merged[-1][1] + indices)
        elif stripped and all(c in _PREPEND for c in stripped):
            carry = (text, indices)
        else:
            merged.append((text, indices))
    if carry is not None:
        merged.append(carry)
    return merged


def align_words(tokens: Sequence[int], probs: np.ndarray, frames: np.ndarray | None,
                decode: Callable[[list[int]], str], language: str | None) -> list[TimedWord]:
    """Timed words of one chunk.

    ``tokens``: the text tokens; ``probs``: each one's probability; ``frames``: the frame each
    token starts at, plus end-of-text (``token_frames`` of the chunk's alignment matrix; None
    only without tokens).
    """
    if not tokens:
        return []
    assert frames is not None
    times = frames / FRAMES_PER_SECOND
    out = []
    for text, indices in group_words(tokens, decode, language):
        if not text.strip():
            continue
        start, end = float(times[indices[0]]), float(times[indices[-1] + 1])
        out.append(TimedWord(text, start, max(start, end),
                             float(np.mean([probs[k] for k in indices]))))
    return clamp_long_words(out)


def clamp_long_words(words: list[TimedWord]) -> list[TimedWord]:
    """openai-whisper's fix for words stretched over a pause.

    Attention cannot place silence, so the word before a pause absorbs it (and the first word
    absorbs leading silence). A word longer than twice the median word (median capped at
    0.7 s) is cut to that length: from its start when it ends a sentence or the chunk, from its
    end when it begins the chunk or follows a sentence end.
    """
    durations = [w.end - w.start for w in words if w.end > w.start]
    if not durations:
        return words
    limit = 2 * min(0.7, float(np.median(durations)))
    out = []
    for i, w in enumerate(words):
        start, end = w.start, w.end
        if end - start > limit:
            if i == len(words) - 1 or w.text.rstrip().endswith(_SENTENCE_END):
                end = start + limit
            elif i == 0 or words[i - 1].text.rstrip().endswith(_SENTENCE_END):
                start = end - limit
        out.append(TimedWord(w.text, start, end, w.probability))
    return out
