"""One decode pass split into time segments decoded side by side, its picks kept in order.

FFmpeg's own threads stop scaling well past a few cores for one stream, so on a many-core host
(a GPU machine) the timeline is cut at keyframes into segments of 3-60 s (10 s at least
when a tracker wants frames at a steady rate) and several decoders
run at once, each on a few threads, each over its own segment. Picks come back in time order,
exactly the ones a single pass makes: a segment seeks to the keyframe before its first wanted
time, so it decodes what the single pass would have. A bounded number of segments' picks are
held at a time (``segments_ahead``), so memory stays flat however long the video.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

from scenescribe.errors import InputError
from scenescribe.knobs import env_count
from scenescribe.media.frames import SHOWN, TICK, FrameRequest, Pick, decode_pass
from scenescribe.media.stream import VideoStream

MIN_SEGMENT_S = 10.0  # a segment's first seek costs up to a GOP: keep that small beside it
# A sparse pass (a few frames a scene) seeks for nearly every pick anyway, so a short segment
# costs little more than a file open; shorter ones balance the decoders better.
MIN_SPARSE_SEGMENT_S = 3.0
MAX_SEGMENT_S = 60.0  # bounds the picks one segment holds (2 fps x 60 s of 640 px frames)
SEGMENTS_PER_WORKER = 3  # several per worker, so an uneven segment doesn't leave cores idle


def auto_workers() -> int:
    """Decoders side by side: about one per eight cores, each with FFmpeg threads for the rest
    (``SCENESCRIBE_DECODE_WORKERS`` overrides). A decoder is a Python thread that takes the
    interpreter from the threads feeding the GPU; FFmpeg's threads do not. In Stage 1 on the
    H200 (W1, 16 cores), two decoders per tracker pass and four per frames pass against four
    and sixteen: Stage 1 52.0 s against 53.9 s, Whisper's batch 10.9 s against 19.2 s
    (``results/h200-2026-12-04-n``)."""
    chosen = env_count("SCENESCRIBE_DECODE_WORKERS")
    if chosen is not None:
        return max(1, chosen)
    return max(1, min(8, (os.cpu_count() or 1) // 8))


def segment_starts(keyframes: Sequence[float], duration: float, workers: int,
                   dense: bool = True) -> list[float]:
    """Where segments after the first begin: on keyframes where the index lists them."""
    shortest = MIN_SEGMENT_S if dense else MIN_SPARSE_SEGMENT_S
    length = min(MAX_SEGMENT_S, max(shortest, duration / (SEGMENTS_PER_WORKER * workers)))
    marks = [length * i for i in range(1, math.ceil(duration / length))]
    if keyframes:
        snapped = []
        for mark in marks:
            later = [k for k in keyframes if k >= mark]
            if later and later[0] < duration:
                snapped.append(later[0])
        marks = snapped
    return sorted(set(m for m in marks if m > 0))


def is_dense(requests: Sequence[FrameRequest]) -> bool:
    """Whether a pass wants frames at a steady rate (``TICK``: a tracker's 2 fps) rather than
    a few per scene."""
    return any(r.rule == TICK for r in requests)


def segments_ahead(dense: bool, workers: int) -> int:
    """Segments submitted but not yet handed on. Sparse picks (a few frames per scene) are
    small, so three rounds of segments may wait behind a slow one at the head; a dense pass
    (up to 120 frames a segment) holds one round and one more."""
    return workers + 1 if dense else 3 * workers


def parallel_pass(path: str | Path, requests: Sequence[FrameRequest], workers: int,
                  threads: int = 0) -> Iterator[Pick]:
    """``decode_pass`` over segments decoded by ``workers`` decoders at once; same picks."""
    video = VideoStream(path, 1)
    try:
        keyframes, duration = video.keyframes(), video.damage.expected_end or 0.0
    finally:
        video.container.close()  # only read the index: nothing decoded, nothing to report
    dense = is_dense(requests)
    starts = [0.0, *segment_starts(keyframes, duration, workers, dense), math.inf]
    if len(starts) <= 2:
        yield from decode_pass(path, requests, threads=threads, workers=1)
        return
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    jobs = []
    for a, b in pairwise(starts):
        sub = [replace(r, times=tuple(t for t in r.times if a <= t < b)) for r in requests]
        if any(r.times for r in sub):
            jobs.append(sub)
    last_tick: dict[int, float] = {}
    served: list[set[float]] = [set() for _ in requests]
    ahead = segments_ahead(dense, workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="decode-segment") as pool:
        pending: deque[Future[list[Pick]]] = deque()
        queue = iter(jobs)
        try:
            while True:
                # Submitted but not yet handed on: the decoders keep working past a slow
                # segment at the head, up to ``ahead`` segments' picks held.
                for sub in queue:
                    pending.append(pool.submit(_segment, path, sub, threads))
                    if len(pending) >= ahead:
                        break
                if not pending:
                    break
                for pick in pending.popleft().result():
                    if requests[pick.request].rule == TICK:
                        # One frame serves every tick it covers, across segments too.
                        if last_tick.get(pick.request) == pick.frame.time:
                            continue
                        last_tick[pick.request] = pick.frame.time
                    served[pick.request].add(pick.time)
                    yield pick
        finally:
            for future in pending:
                future.cancel()
    # Times no segment could serve (past a cut-off tail): the single pass's rule, on its own.
    left = [replace(r, times=tuple(t for t in r.times if t not in served[i]) if r.rule == SHOWN
                    else ()) for i, r in enumerate(requests)]
    if any(r.times for r in left):
        yield from decode_pass(path, left, threads=threads, workers=1)


def _segment(path: str | Path, requests: list[FrameRequest], threads: int) -> list[Pick]:
    try:
        return list(decode_pass(path, requests, threads=threads, workers=1))
    except InputError:
        return []  # nothing decodes there (a cut-off tail); the caller serves what is left
