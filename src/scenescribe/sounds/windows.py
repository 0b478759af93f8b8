"""Shared sound-tagging logic: analysis spans, model windows, streaming audio, score pooling.

A tagger sees each scene through its *analysis span*: the scene itself, or for a scene shorter
than ``min_context`` a span of ``min_context`` seconds centred on it and clamped to the file (AST
and YAMNet tag a 0.5 s clip badly: they need context). A span is cut into model windows (YAMNet:
0.975 s every 0.48 s; AST: up to 10.25 s); the windows' scores are pooled per scene (``pool``)
and the top labels kept, less those that only rename a sound already kept (``top_tags``).

Audio is read in one forward pass over the file (``iter_audio_blocks``) with a buffer that holds
at most one window plus one block, so memory is flat in video length. Measured (2-core CPU, to
16 kHz mono): the 30 s synthetic clip (7 scenes) decodes in 0.09 s in one pass against 0.41 s
span by span with ``decode_audio(start=, end=)`` (a seek and a re-primed decoder per span);
Big Buck Bunny's 30 s (4 scenes): 0.11 s against 0.29 s. Windows shared by overlapping spans
of neighbouring short scenes are scored once.
"""

from __future__ import annotations

import contextlib
import logging
import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from scenescribe.media import iter_audio_blocks
from scenescribe.media.audio_child import ChildReader, audio_readers
from scenescribe.media.audio_spool import AudioSpool
from scenescribe.progress import Progress
from scenescribe.records import Scene, SoundTag, VideoInfo
from scenescribe.sounds.base import SoundTagger

log = logging.getLogger("scenescribe.sounds")

Window = tuple[int, int]  # (first sample, length in samples) on the file's clock
# Labels whose scores rise and fall together over a scene's windows (Pearson correlation at
# least this) are one sound under several names: YAMNet hears one 440 Hz tone as Telephone,
# Dial tone, Alarm and Busy signal (correlations 0.99-1.00), which filled four of five tags and
# pushed out the speech in the same scene. Only the highest-scoring of them is kept.
REDUNDANT_CORRELATION = 0.95
MIN_WINDOWS = 4  # below this, correlations are +-1 by chance: no label is merged
MAX_BINS = 512  # rows of a scene's score profile kept for correlations (see SceneScores)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """How a model reads audio.

    ``window`` and ``hop`` are in samples. A ``fixed`` model (YAMNet) takes exactly ``window``
    samples, so its spans are never shorter than one window; a variable one (AST) takes a span
    shorter than ``window`` as one window of the span's length and pads it itself.
    ``min_span`` is the shortest span the model is given, whatever ``min_context`` says.
    """

    sample_rate: int
    window: int
    hop: int
    fixed: bool
    min_span: int = 0


def analysis_span(scene: Scene, duration: float, min_context: float) -> tuple[float, float]:
    """The seconds of audio the tagger hears for ``scene``.

    A scene at least ``min_context`` long is its own span. A shorter one gets ``min_context``
    seconds centred on its middle, shifted (not cut) to stay inside ``[0, duration]``; a file
    shorter than ``min_context`` gives its whole length.
    """
    start, end = max(0.0, scene.start), min(duration, scene.end)
    if end - start >= min_context:
        return start, end
    if duration <= min_context:
        return 0.0, duration
    mid = (scene.start + scene.end) / 2
    lo = min(max(0.0, mid - min_context / 2), duration - min_context)
    return lo, lo + min_context


def span_windows(start: int, end: int, spec: WindowSpec) -> list[Window]:
    """Windows covering samples ``[start, end)``: the first starts at ``start``, the last ends at
    ``end``, and the fewest windows at most ``hop`` apart are spread evenly between (even spacing
    keeps the mean fair to every part of the span). A span no longer than a window is one
    window: its own length for variable models, ``window`` for fixed ones (the reader pads past
    the end of the audio with silence).
    """
    length = end - start
    if length <= spec.window:
        return [(start, spec.window if spec.fixed else max(length, spec.min_span, 1))]
    gaps = math.ceil((length - spec.window) / spec.hop)
    return [(start + round(k * (length - spec.window) / gaps), spec.window)
            for k in range(gaps + 1)]


def plan(scenes: Sequence[Scene], duration: float, spec: WindowSpec,
         min_context: float) -> list[list[Window]]:
    """Each scene's windows: a few integers per window, never audio (about 8 MB of plan for
    five hours of YAMNet windows, against 1.1 GB for the audio itself)."""
    context = max(min_context, spec.min_span / spec.sample_rate)
    out = []
    for scene in scenes:
        lo, hi = analysis_span(scene, duration, context)
        first = int(round(lo * spec.sample_rate))
        last = max(first + 1, int(round(hi * spec.sample_rate)))
        out.append(span_windows(first, last, spec))
    return out


def read_windows(path: str, windows: Sequence[Window], sample_rate: int,
                 block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """The samples of each window (sorted by start) in one pass over the file's audio.

    The buffer is trimmed to the current window's start before each read, so it never holds
    more than one window plus one block. Samples past the end of the audio are silence. The
    audio is decoded in a child process (``audio_child``; a thread here waits its turn for the
    GIL at each of PyAV's frames) unless ``SCENESCRIBE_AUDIO_READERS=0``.
    """
    if audio_readers() == 0:
        with contextlib.closing(iter_audio_blocks(path, sample_rate, block_seconds)) as blocks:
            yield from _cut(blocks, windows, sample_rate)
        return
    with ChildReader([path], 1, read="blocks", sample_rate=sample_rate,
                     block_seconds=block_seconds) as child:
        read = child.chunks(path)
        with contextlib.closing(read):
            yield from _cut(((offset, samples) for offset, samples, _ in read), windows,
                            sample_rate)


def _cut(blocks: Iterator[tuple[float, np.ndarray]], windows: Sequence[Window],
         sample_rate: int) -> Iterator[np.ndarray]:
    buf = np.zeros(0, np.float32)
    buf_start = 0
    exhausted = False
    for start, length in windows:
        if start > buf_start:  # windows are sorted: nothing before ``start`` is needed again
            buf = buf[start - buf_start:]
            buf_start = start
        while not exhausted and buf_start + len(buf) < start + length:
            block = next(blocks, None)
            if block is None:
                exhausted = True
                break
            block_start, data = block
            first = int(round(block_start * sample_rate))
            skip = max(0, buf_start - first)  # a block wholly before the window is dropped
            if first + len(data) > buf_start:
                buf = np.concatenate([buf, data[skip:]])
        out = buf[max(0, start - buf_start):][:length]
        if len(out) < length:
            out = np.pad(out, (0, length - len(out)))
        yield out


def pool(sums: np.ndarray, maxes: np.ndarray, count: int) -> np.ndarray:
    """A scene's score per class from its windows: the average of the mean and the maximum.

    Why both: the mean alone buries short events (a 0.5 s beep is in 3 of the 8 YAMNet windows
    of a 4 s scene), the maximum alone lets one noisy window speak for a whole long scene. The
    average equals the window score for a sound sustained through the scene, keeps at least half
    the peak of a short event (the beep surfaces), and halves a one-window false spike.
    """
    return 0.5 * (sums / max(count, 1) + maxes)


def top_tags(scores: np.ndarray, labels: Sequence[str], top_k: int, min_score: float,
             similar: Callable[[int, int], float] | None = None,
             threshold: float = 1.0) -> list[SoundTag]:
    """The ``top_k`` labels scoring at least ``min_score``, highest first (ties by label).

    With ``similar``, a label whose similarity to a label already chosen is ``threshold`` or
    more is skipped as another name for the same sound.
    """
    chosen: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: (-float(scores[i]), labels[i])):
        if len(chosen) >= top_k or scores[i] < min_score:
            break
        if similar is None or all(similar(i, j) < threshold for j in chosen):
            chosen.append(i)
    return [SoundTag(labels[i], float(scores[i])) for i in chosen]


class SceneScores:
    """Running statistics of one scene's window scores, in memory flat in scene length.

    Mean and maximum are exact. For label correlations the rows are kept as a profile of at
    most ``MAX_BINS`` bins: when it fills, neighbouring bins are averaged in pairs and later bins
    take twice as many windows (about 1 MB at 527 classes; YAMNet fills it after 4 minutes).
    """

    def __init__(self, pending: int) -> None:
        self.pending = pending  # windows still to come
        self.count = 0
        self.sums: np.ndarray | None = None
        self.maxes: np.ndarray | None = None
        self.bins: list[np.ndarray] = []  # each the mean of ``bin_size`` windows
        self.bin_size = 1
        self._partial: np.ndarray | None = None  # the sum of the windows of an unfilled bin
        self._partial_n = 0

    def add(self, rows: np.ndarray) -> None:
        """Add window score rows, shape ``(windows, classes)``."""
        rows = np.asarray(rows, np.float32)
        if self.sums is None or self.maxes is None:
            self.sums, self.maxes = np.zeros(rows.shape[1]), np.zeros(rows.shape[1])
        self.sums += rows.sum(0, dtype=np.float64)
        np.maximum(self.maxes, rows.max(0), out=self.maxes)
        self.count += len(rows)
        self.pending -= len(rows)
        for row in rows:
            self._partial = row.copy() if self._partial is None else self._partial + row
            self._partial_n += 1
            if self._partial_n == self.bin_size:
                self.bins.append(self._partial / self.bin_size)
                self._partial, self._partial_n = None, 0
                if len(self.bins) == MAX_BINS:
                    self.bins = [(x + y) / 2 for x, y in zip(self.bins[::2], self.bins[1::2],
                                                             strict=True)]
                    self.bin_size *= 2

    def pooled(self) -> np.ndarray:
        assert self.sums is not None and self.maxes is not None
        return pool(self.sums, self.maxes, self.count)

    def correlations(self, classes: Sequence[int]) -> np.ndarray:
        """Pearson correlations between ``classes`` over the scene's profile; 0 for a label
        that is flat, and all 0 with fewer than ``MIN_WINDOWS`` bins (chance gives +-1)."""
        rows = self.bins + ([self._partial / self._partial_n] if self._partial is not None
                            else [])
        out = np.zeros((len(classes), len(classes)))
        if len(rows) < MIN_WINDOWS or not len(classes):
            return out
        x = np.stack(rows)[:, list(classes)].astype(np.float64)
        x -= x.mean(0)
        norms = np.sqrt((x * x).sum(0))
        live = norms > 1e-3 * math.sqrt(len(rows))  # std above 0.001
        x[:, live] /= norms[live]
        out[np.ix_(live, live)] = x[:, live].T @ x[:, live]
        return out

    def tags(self, labels: Sequence[str], top_k: int, min_score: float,
             threshold: float) -> list[SoundTag]:
        """Top tags, merging labels correlated at ``threshold`` or more."""
        scores = self.pooled()
        candidates = [int(i) for i in np.flatnonzero(scores >= min_score)]
        corr = self.correlations(candidates)
        where = {c: k for k, c in enumerate(candidates)}
        return top_tags(scores, labels, top_k, min_score,
                        lambda i, j: float(corr[where[i], where[j]]), threshold)


class WindowedTagger(SoundTagger):
    """A sound tagger that scores fixed or bounded windows; subclasses supply the model.

    Subclasses implement ``_load`` (setting what ``spec``, ``labels`` and ``score_windows``
    need), ``spec``, ``labels`` and ``score_windows``; ``batch_size`` windows go to the model
    at once.
    """

    batch_size: int = 1

    @property
    @abstractmethod
    def spec(self) -> WindowSpec:
        """The model's window geometry (valid after ``load``)."""

    @property
    @abstractmethod
    def labels(self) -> Sequence[str]:
        """Class names, index-aligned with the score vectors (valid after ``load``)."""

    @abstractmethod
    def score_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Scores in [0, 1], shape ``(len(windows), len(labels))``."""

    def tag_scenes(self, video: VideoInfo, scenes: Sequence[Scene], progress: Progress,
                   audio: AudioSpool | None = None) -> Iterator[tuple[int, list[SoundTag]]]:
        task = progress.task(f"sounds ({self.name})", total=len(scenes))
        try:
            if not video.has_audio:
                for scene in scenes:
                    task.advance()
                    yield scene.index, []
                return
            self.load()
            for item in self._tag(video, scenes, audio):
                task.advance()
                yield item
        finally:
            task.close()

    def _tag(self, video: VideoInfo, scenes: Sequence[Scene], audio: AudioSpool | None = None,
             ) -> Iterator[tuple[int, list[SoundTag]]]:
        spec, opts = self.spec, self.options
        per_scene = plan(scenes, video.duration, spec, opts.min_context)
        users: dict[Window, list[int]] = {}  # a window shared by overlapping spans runs once
        for pos, wins in enumerate(per_scene):
            for w in dict.fromkeys(wins):
                users.setdefault(w, []).append(pos)
        order = sorted(users)
        log.debug("%s: %d scenes, %d windows", self.name, len(scenes), len(order))
        acc = {pos: SceneScores(len(set(wins))) for pos, wins in enumerate(per_scene)}
        threshold = float(getattr(opts, "redundant_correlation", REDUNDANT_CORRELATION))
        next_pos = 0
        for batch, scores in self._scored(video.path, order, audio):
            rows: dict[int, list[int]] = {}
            for row, window in enumerate(batch):
                for pos in users.pop(window):
                    rows.setdefault(pos, []).append(row)
            for pos, picked in rows.items():
                acc[pos].add(scores[picked])
            while next_pos < len(scenes) and acc[next_pos].pending == 0:
                done = acc.pop(next_pos)  # freed at once: flat memory
                yield scenes[next_pos].index, done.tags(self.labels, opts.top_k,
                                                        opts.min_score, threshold)
                next_pos += 1

    def _scored(self, path: str, order: Sequence[Window], spool: AudioSpool | None = None,
                ) -> Iterator[tuple[list[Window], np.ndarray]]:
        rate = self.spec.sample_rate
        if spool is not None and spool.sealed and spool.sample_rate == rate:
            found = spool.windows(order)  # the speech stage's decode, the same samples
        else:
            found = read_windows(path, order, rate)
        batch: list[Window] = []
        audio: list[np.ndarray] = []
        for window, samples in zip(order, found, strict=True):
            batch.append(window)
            audio.append(samples)
            if len(batch) >= self.batch_size:
                yield batch, self.score_windows(audio)
                batch, audio = [], []
        if batch:
            yield batch, self.score_windows(audio)
