"""Many videos' speech chunks pooled into one batched stream, results routed back per video.

A reader thread takes each video's audio in turn (``chunks``; ``hf_whisper``'s decodes it in
child processes, ``audio_child``), putting its non-silent chunks on a bounded queue; the
caller's thread forms batches from whatever videos the chunks came from and decodes them (on the
GPU), so audio decoding of the next video overlaps the model's work on the current ones. Memory
is bounded by the queue and the batching window (a few batches of 30 s chunks), never by the
folder: a video's audio is dropped as soon as its chunks are decoded.

Batches are formed from a window of up to two batches of waiting chunks, longest first, so
chunks of like length (and so like token counts: a batch decodes as long as its longest chunk)
go together; a chunk passed over once is taken first next time, so none waits more than one
batch and the window stays bounded. A video's result is yielded once its last chunk is decoded.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from scenescribe.media import SAMPLE_RATE
from scenescribe.progress import Progress, Task
from scenescribe.records import VideoInfo
from scenescribe.speech.base import AudioReads, SpeechResult

log = logging.getLogger("scenescribe.speech")

D = TypeVar("D")  # one chunk's decoding
Chunker = Callable[[VideoInfo, Task, dict[str, Any]], Iterable[tuple[float, np.ndarray]]]
QUEUED_BATCHES = 2  # chunks read ahead of the model, in batches


@dataclass(slots=True)
class _Chunk:
    video: int
    offset: float
    samples: np.ndarray
    passed: bool = False  # left out of a batch once: taken first next time


@dataclass(slots=True)
class _Video(Generic[D]):
    task: Task
    extra: dict[str, Any]
    decoded: list[D] = field(default_factory=list)
    queued: int = 0
    done: int = 0
    read: bool = False  # every chunk has been queued


def pick_batch(window: list[_Chunk], size: int) -> tuple[list[_Chunk], list[_Chunk]]:
    """``(batch, rest)``: chunks passed over before first, then the longest."""
    order = sorted(window, key=lambda c: (not c.passed, -len(c.samples)))
    batch, rest = order[:size], order[size:]
    for c in rest:
        c.passed = True
    return batch, rest


def transcribe_pooled(
    videos: Sequence[tuple[VideoInfo, Progress]], chunks: Chunker,
    decode: Callable[[list[tuple[float, np.ndarray]]], list[D]], keep: Callable[[D], bool],
    finish: Callable[[list[D], dict[str, Any]], SpeechResult], batch_size: int,
    reads: AudioReads | None = None, cancel: Callable[[], None] | None = None,
) -> Iterator[tuple[int, SpeechResult | Exception]]:
    """Yield ``(video position, result or the exception that stopped that video)`` as each
    video completes. ``chunks`` yields a video's non-silent ``(offset, samples)`` and fills its
    dict with counts; ``decode`` runs one batch; ``finish`` turns kept decodings into a result.
    An exception from ``decode`` stops everything (it is the model's, not one video's). The
    reader notes its seconds per video and its end in ``reads``. ``cancel`` is called when the
    stream stops (done, failed or closed early) before the reader thread is waited for: it ends
    a read blocked outside Python (``audio_child`` kills its processes)."""
    reads = reads if reads is not None else AudioReads()
    size = max(1, batch_size)
    inbox: queue.Queue[tuple[str, int, Any]] = queue.Queue(maxsize=QUEUED_BATCHES * size)
    stop = threading.Event()
    states: dict[int, _Video[D]] = {}

    def put(item: tuple[str, int, Any]) -> bool:
        while not stop.is_set():
            try:
                inbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read_videos() -> None:
        for i, (video, progress) in enumerate(videos):
            if stop.is_set():
                return
            if not video.has_audio:
                put(("empty", i, None))
                continue
            task = progress.task("speech", total=video.duration)
            extra: dict[str, Any] = {}
            states[i] = _Video(task, extra)  # before its first chunk is seen
            start = time.perf_counter()
            try:
                for offset, samples in chunks(video, task, extra):
                    if not put(("chunk", i, (offset, samples))):
                        return
            except Exception as exc:  # this video's audio: the others go on
                put(("error", i, exc))
                continue
            finally:
                reads.seconds[i] = time.perf_counter() - start
            put(("read", i, None))
        reads.finished_at = time.perf_counter()

    def read_all() -> None:
        try:
            read_videos()
        except BaseException as exc:  # a bug here must not leave the model waiting forever
            put(("fatal", -1, exc))
        finally:
            put(("end", -1, None))

    reader = threading.Thread(target=read_all, name="speech-audio", daemon=True)
    reader.start()
    window: list[_Chunk] = []
    reading = True
    try:
        while reading or window:
            # Wait for chunks until a batch is full; then take what else is already there.
            while reading and len(window) < size:
                reading, done = _take(inbox.get(), window, states, finish)
                yield from done
            while reading and len(window) < 2 * size:
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
                reading, done = _take(item, window, states, finish)
                yield from done
            window = [c for c in window if c.video in states]  # failed videos' chunks go
            if not window:
                continue
            batch, window = pick_batch(window, size)
            decoded = decode([(c.offset, c.samples) for c in batch])
            for c, d in zip(batch, decoded, strict=True):
                yield from _route(c, d, states, keep, finish)
    finally:
        stop.set()
        if cancel is not None:
            cancel()
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                inbox.get(timeout=0.05)  # unblocks a reader waiting to put
        for state in states.values():
            state.task.close()


def _take(item: tuple[str, int, Any], window: list[_Chunk], states: dict[int, _Video[Any]],
          finish: Callable[[list[Any], dict[str, Any]], SpeechResult],
          ) -> tuple[bool, list[tuple[int, SpeechResult | Exception]]]:
    """Handle one message of the reader: (still reading, videos now complete)."""
    kind, i, payload = item
    out: list[tuple[int, SpeechResult | Exception]] = []
    if kind == "fatal":
        raise payload
    if kind == "end":
        return False, out
    if kind == "empty":
        out.append((i, SpeechResult()))
    elif kind == "chunk":
        window.append(_Chunk(i, *payload))
        states[i].queued += 1
    elif kind == "error":
        states.pop(i).task.close()
        out.append((i, payload))
    elif kind == "read":
        states[i].read = True
        out.extend(_complete(i, states, finish))
    return True, out


def _route(chunk: _Chunk, decoded: Any, states: dict[int, _Video[Any]],
           keep: Callable[[Any], bool],
           finish: Callable[[list[Any], dict[str, Any]], SpeechResult],
           ) -> list[tuple[int, SpeechResult | Exception]]:
    state = states.get(chunk.video)
    if state is None:  # its video failed meanwhile
        return []
    state.done += 1
    state.task.advance(len(chunk.samples) / SAMPLE_RATE)
    if keep(decoded):
        state.decoded.append(decoded)
    return _complete(chunk.video, states, finish)


def _complete(i: int, states: dict[int, _Video[Any]],
              finish: Callable[[list[Any], dict[str, Any]], SpeechResult],
              ) -> list[tuple[int, SpeechResult | Exception]]:
    state = states[i]
    if not state.read or state.done < state.queued:
        return []
    del states[i]
    state.task.close()
    try:
        return [(i, finish(state.decoded, state.extra))]
    except Exception as exc:
        return [(i, exc)]
