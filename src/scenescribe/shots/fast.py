"""A CPU shot detector without PySceneDetect's per-frame machinery: ``hsvcut``.

It scores frames as PySceneDetect's ``ContentDetector`` does (the mean absolute change of hue,
saturation and value between consecutive frames, on frames shrunk to ``downscale_width``) and
applies ``AdaptiveDetector``'s rule (a frame's score against the mean of its ``window``
neighbours on each side), then checks each candidate with a second, independent measure: the
colour-histogram change across the cut, which a camera move or a flash barely shifts but a new
shot does. Both are a few OpenCV calls per frame on the small frames; no PySceneDetect import,
no BGR copy (OpenCV's RGB2HSV reads the decoder's RGB directly), and no ``FrameTimecode``.

Fades to and from black are found from the mean brightness: a run of near-black frames between
two shots becomes one boundary at its middle, recorded as a ``fade`` transition; the fade in
from black that opens a video (and the fade out that ends it) joins no two shots and is not a
boundary.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from scenescribe.media import DecodedFrame, iter_frames
from scenescribe.progress import Progress
from scenescribe.records import Transition, VideoInfo
from scenescribe.shots.base import Cut, ShotDetector
from scenescribe.shots.segments import auto_workers, constant_rate, detect_in_segments, plan_segments

log = logging.getLogger("scenescribe.shots")

_PROGRESS_STEP = 64
_HIST_BINS = (16, 4, 4)  # hue, saturation, value: hue carries most of a shot's identity
_DARK = 24.0  # mean value (0-255) under which a frame counts as black, for fades


@dataclass(frozen=True, slots=True)
class Tuning:
    """The rule's constants; ``HsvCutDetector`` documents how they were chosen."""

    ratio: float  # adaptive ratio a candidate must reach
    window_s: float  # seconds of neighbours on each side
    min_window: int  # at least this many frames on each side
    min_content: float  # a candidate's own score must reach this (0-255 scale)
    hist_min: float  # histogram change (1 - intersection, 0-1) a candidate must reach
    strong: float  # a score this high is a cut without the ratio test (a cut right after a cut)


class HsvCutDetector(ShotDetector):
    """Adaptive HSV content change plus a colour-histogram check; see the module docstring."""

    TUNING = Tuning(ratio=2.5, window_s=0.0, min_window=2, min_content=12.0, hist_min=0.25,
                    strong=60.0)

    def _load(self) -> Any:
        import cv2

        return cv2

    @property
    def tuning(self) -> Tuning:
        t = self.options.threshold
        return self.TUNING if t is None else Tuning(**{**_asdict(self.TUNING), "ratio": float(t)})

    def cache_key(self) -> dict[str, Any]:
        return {**super().cache_key(), "tuning": _asdict(self.tuning), "version": 1}

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "tuning": _asdict(self.tuning)}

    def detect(self, video: VideoInfo, progress: Progress) -> list[Cut]:
        self.load()
        fps = video.fps or 25.0
        segments = plan_segments(video.duration, self.options.workers or auto_workers())
        if len(segments) > 1 and constant_rate(video):
            return detect_in_segments(self, video, segments, progress)
        frames = iter_frames(video.path, width=self.options.downscale_width or None,
                             threads=self.options.threads)
        task = progress.task("shots", total=video.num_frames)
        try:
            cuts = self.cuts_from_frames(frames, fps, task.advance)
        finally:
            task.close()
        log.debug("%s: %d cuts in %s", self.name, len(cuts), video.path)
        return cuts

    def cuts_from_frames(self, frames: Iterable[DecodedFrame], fps: float,
                         advance: Callable[[float], None] | None = None) -> list[Cut]:
        """Boundaries of a frame stream (also one segment's stream, see ``segments``)."""
        rule = _Rule(self.tuning, fps, max(1, round(self.options.min_scene_len * fps)))
        cv2 = self.model
        prev_hsv = prev_hist = None
        pending = 0
        for frame in frames:
            hsv = cv2.cvtColor(frame.image, cv2.COLOR_RGB2HSV)
            hist = cv2.calcHist([hsv], [0, 1, 2], None, list(_HIST_BINS),
                                [0, 180, 0, 256, 0, 256])
            hist /= max(float(hist.sum()), 1.0)
            brightness = float(cv2.mean(hsv)[2])
            if prev_hsv is None:
                score = change = 0.0
            else:
                h, s, v, _ = cv2.mean(cv2.absdiff(hsv, prev_hsv))
                score = (h + s + v) / 3.0
                change = 1.0 - float(np.minimum(hist, prev_hist).sum())
            rule.add(frame.index, frame.time, score, change, brightness)
            prev_hsv, prev_hist = hsv, hist
            pending += 1
            if advance is not None and pending >= _PROGRESS_STEP:
                advance(pending)
                pending = 0
        if advance is not None and pending:
            advance(pending)
        return rule.finish()


def _asdict(t: Tuning) -> dict[str, float]:
    return {k: getattr(t, k) for k in Tuning.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Frame:
    index: int
    time: float
    score: float
    change: float
    brightness: float


class _Rule:
    """Streams frames' scores and keeps the boundaries; memory is two windows of frames."""

    def __init__(self, tuning: Tuning, fps: float, min_len: int) -> None:
        self.t = tuning
        self.window = max(tuning.min_window, round(tuning.window_s * fps))
        self.min_len = min_len
        self.buffer: deque[_Frame] = deque(maxlen=2 * self.window + 1)
        self.cuts: list[Cut] = []
        self.last_cut = -(10**9)
        self.dark_from: _Frame | None = None  # first frame of the current run of black frames
        self.seen_light = False  # a non-black frame has been seen: a shot exists before a fade
        self.first_index: int | None = None

    def add(self, index: int, time: float, score: float, change: float,
            brightness: float) -> None:
        frame = _Frame(index, time, score, change, brightness)
        if self.first_index is None:
            self.first_index = index
        self._fade(frame)
        self.buffer.append(frame)
        if len(self.buffer) == self.buffer.maxlen:
            self._judge(self.window)

    def finish(self) -> list[Cut]:
        # The last frames are judged with the window they have (PySceneDetect never judges them).
        for k in range(self.window + 1, len(self.buffer)):
            self._judge(k)
        return sorted(self.cuts, key=lambda c: c.frame)

    def _judge(self, k: int) -> None:
        frames = list(self.buffer)
        target = frames[k]
        if target.index == self.first_index:
            return
        others = [f.score for i, f in enumerate(frames) if i != k]
        mean = sum(others) / len(others) if others else 0.0
        ratio = target.score / mean if mean > 1e-5 else (255.0 if target.score else 0.0)
        is_peak = ratio >= self.t.ratio or target.score >= self.t.strong
        if (is_peak and target.score >= self.t.min_content and target.change >= self.t.hist_min
                and target.index - self.last_cut >= self.min_len
                and target.brightness >= _DARK and frames[k - 1].brightness >= _DARK):
            self.cuts.append(Cut(target.index, target.time))
            self.last_cut = target.index

    def _fade(self, frame: _Frame) -> None:
        """A run of black frames between two lit shots: one boundary at its middle."""
        if frame.brightness < _DARK:
            if self.dark_from is None:
                self.dark_from = frame
            self._dark_last = frame
            return
        start = self.dark_from
        self.dark_from = None
        if start is not None and self.seen_light:
            last = self._dark_last
            middle_index = (start.index + frame.index) // 2
            share = (middle_index - start.index) / max(frame.index - start.index, 1)
            middle_time = start.time + share * (frame.time - start.time)
            if middle_index - self.last_cut >= self.min_len:
                span = Transition("fade", start.time, frame.time, start.index, frame.index)
                self.cuts.append(Cut(middle_index, middle_time, span))
                self.last_cut = middle_index
            del last
        self.seen_light = True
