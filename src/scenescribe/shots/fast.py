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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from scenescribe.media import DecodedFrame, iter_frames
from scenescribe.progress import Progress
from scenescribe.records import Transition, VideoInfo
from scenescribe.shots.base import Cut, ShotDetector
from scenescribe.shots.segments import detect_decoded

log = logging.getLogger("scenescribe.shots")

_PROGRESS_STEP = 64
_HIST_BINS = (16, 4, 4)  # hue, saturation, value: hue carries most of a shot's identity
_DARK = 24.0  # mean value (0-255) under which a frame counts as black, for fades
_FADE_MIN = 6  # frames of steady darkening or brightening that make a fade
_FADE_MAX_S = 3.0  # seconds of frames kept to look back along a fade out
_END_MARGIN_S = 1.0  # a boundary this close before the black that ends a video is its fade out


@dataclass(frozen=True, slots=True)
class Tuning:
    """The rule's constants; ``HsvCutDetector`` documents how they were chosen."""

    ratio: float  # a frame's score over the mean score of its neighbours must reach this
    window: int  # neighbours on each side, in frames
    min_content: float  # a candidate's own score must reach this (0-255 scale)
    hist_min: float  # histogram change (1 - intersection, 0-1) a candidate must reach
    low_ratio: float = 99.0  # a weaker peak (motion all around) is a cut when its histogram
    hist_ratio: float = 99.0  # change is this many times its neighbours' mean change


class HsvCutDetector(ShotDetector):
    """Adaptive HSV change plus a colour-histogram check; see the module docstring.

    Chosen on the shot corpus (``benchmarks/bench_shot_accuracy.py``, pooled over every clip;
    the sweep and its table are in the README's "Why these defaults"):

    * ``ratio`` 3 and ``window`` 2 frames are PySceneDetect's own ``AdaptiveDetector`` defaults;
      scenescribe's earlier 0.4 s window and ratio 10, tuned on two clips, found 25 of the music
      video's 130 cuts, whose cuts fall inside each other's windows. Ratios 2.2-3.5 pooled
      within 0.015 of each other; 3 had no false cut.
    * ``min_content`` 18 (PySceneDetect: 15): every true cut outside the 1928 cartoon scores at
      least 22, a one-frame jump during Big Buck Bunny's camera tilt (frame 139) 15.3.
    * ``hist_min`` 0.2: the 16x4x4 HSV histogram changes by at least 0.24 across every cut of the
      music video and the other clips, but by at most 0.19 across the synthetic clip's
      cellular-automaton steps, which the adaptive rule alone takes for cuts (27 false ones).
    * Second stage, where the adaptive rule is unsure (ratio 2 to 3: a cut inside heavy motion,
      Tears of Steel's battle, Sintel's fight): the candidate is a cut when its histogram change
      is at least 5 times the mean of its neighbours'. Pooled F1 0.913 -> 0.927 on the
      22-clip corpus; lowering the ratio to 2.5 alone reached 0.919 with twice the false cuts.
    * A video that opens on black and brightens frame by frame is fading in: no cut there
      (Big Buck Bunny's fade-in scores a 3.2 ratio at frame 31). A jump out of black is a cut.
    """

    TUNING = Tuning(ratio=3.0, window=2, min_content=18.0, hist_min=0.2, low_ratio=2.0,
                    hist_ratio=5.0)

    def _load(self) -> Any:
        import cv2

        return cv2

    @property
    def tuning(self) -> Tuning:
        t = self.options.threshold
        if t is None:
            return self.TUNING
        return replace(self.TUNING, ratio=float(t))

    def cache_key(self) -> dict[str, Any]:
        return {**super().cache_key(), "tuning": _asdict(self.tuning), "version": 1}

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "tuning": _asdict(self.tuning)}

    def detect(self, video: VideoInfo, progress: Progress) -> list[Cut]:
        return detect_decoded(self, video, progress)

    def frame_format(self) -> dict[str, Any]:
        """How ``iter_frames`` decodes for this detector: the planes, shrunk here."""
        return {"pixel_format": "yuv420p"}

    def cuts_from_frames(self, frames: Iterable[DecodedFrame], fps: float,
                         advance: Callable[[float], None] | None = None) -> list[Cut]:
        """Boundaries of a frame stream (also one segment's stream, see ``segments``)."""
        rule = _Rule(self.tuning, fps, max(1, round(self.options.min_scene_len * fps)))
        for f in frame_features(frames, self.options.downscale_width, advance):
            rule.add(f)
        return rule.finish()


def frame_features(frames: Iterable[DecodedFrame], width: int,
                   advance: Callable[[float], None] | None = None) -> Iterator[_Frame]:
    """Each frame's HSV change from the previous one, histogram change and brightness.

    Frames arrive as the decoder's I420 planes (``iter_frames(pixel_format="yuv420p")``) or as
    RGB; I420 planes are shrunk with OpenCV's area filter before the colour conversion, which
    costs a third of FFmpeg's scaler converting the whole frame.
    """
    import cv2

    prev_hsv = None
    pending = 0
    size: tuple[int, int] | None = None
    for frame in frames:
        image = frame.image
        if image.ndim == 2:  # I420: (H * 3 / 2, W)
            if size is None:
                size = _small_size(image.shape[1], image.shape[0] * 2 // 3, width)
            rgb = _i420_to_small_rgb(cv2, image, size)
        else:
            rgb = image
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        brightness = float(cv2.mean(hsv)[2])
        score = 0.0
        if prev_hsv is not None:
            h, s, v, _ = cv2.mean(cv2.absdiff(hsv, prev_hsv))
            score = (h + s + v) / 3.0
        # The histogram change is computed only for the frames the rule asks about.
        yield _Frame(frame.index, frame.time, score, brightness, hsv, prev_hsv)
        prev_hsv = hsv
        pending += 1
        if advance is not None and pending >= _PROGRESS_STEP:
            advance(pending)
            pending = 0
    if advance is not None and pending:
        advance(pending)


def opening_fade_end(path: str, max_seconds: float = 10.0) -> int:
    """Index of the last frame of the fade in from black that opens the video, else -1.

    The rule ``hsvcut`` applies while it streams (``_Rule``), for detectors that do not see
    brightness (TransNetV2 scores Big Buck Bunny's fade-in 0.59): the video opens on a black
    frame and brightens frame by frame; a jump out of black ends it (a cut).
    """
    last, prev = -1, None
    for frame in iter_frames(path, width=64, end=max_seconds):
        brightness = float(frame.image.max(axis=2).mean())  # HSV value: max of R, G, B
        if prev is None:
            if brightness >= _DARK:
                return -1
        elif not (brightness < _DARK or prev + 0.1 < brightness < prev + 2 * _DARK):
            break
        last, prev = frame.index, brightness
    return last


def _small_size(width: int, height: int, target: int) -> tuple[int, int]:
    """Even ``(w, h)`` no wider than ``target`` (0: unchanged), keeping the aspect ratio."""
    scale = min(1.0, target / width) if target else 1.0
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _i420_to_small_rgb(cv2: Any, planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h = planes.shape[0] * 2 // 3
    w = planes.shape[1]
    sw, sh = size
    chroma = planes[h:].reshape(2, h // 2, w // 2)
    out = np.empty((sh * 3 // 2, sw), np.uint8)
    area = cv2.INTER_AREA
    out[:sh] = cv2.resize(planes[:h], (sw, sh), interpolation=area)
    out[sh:].reshape(2, sh // 2, sw // 2)[0] = cv2.resize(chroma[0], (sw // 2, sh // 2),
                                                           interpolation=area)
    out[sh:].reshape(2, sh // 2, sw // 2)[1] = cv2.resize(chroma[1], (sw // 2, sh // 2),
                                                           interpolation=area)
    return cv2.cvtColor(out, cv2.COLOR_YUV2RGB_I420)


def _asdict(t: Tuning) -> dict[str, float]:
    return {k: getattr(t, k) for k in Tuning.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Frame:
    """One frame's measures; ``change`` (histogram) is computed from the HSV frames on demand."""

    index: int
    time: float
    score: float
    brightness: float
    hsv: np.ndarray | None = None
    prev_hsv: np.ndarray | None = None
    known_change: float | None = None

    @property
    def change(self) -> float:
        if self.known_change is None:
            if self.hsv is None or self.prev_hsv is None:
                self.known_change = 0.0
            else:
                self.known_change = 1.0 - float(np.minimum(_hist(self.hsv),
                                                           _hist(self.prev_hsv)).sum())
        return self.known_change


def _hist(hsv: np.ndarray) -> np.ndarray:
    import cv2

    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(_HIST_BINS), [0, 180, 0, 256, 0, 256])
    return hist / max(float(hist.sum()), 1.0)


class _Rule:
    """Streams frames' scores and keeps the boundaries; memory is a few seconds of frames."""

    def __init__(self, tuning: Tuning, fps: float, min_len: int) -> None:
        self.t = tuning
        self.window = tuning.window
        self.min_len = min_len
        self.buffer: deque[_Frame] = deque(maxlen=2 * self.window + 1)
        self.history: deque[_Frame] = deque(maxlen=max(8, round(_FADE_MAX_S * fps)))
        self.cuts: list[Cut] = []
        self.last_cut = -(10**9)
        self.first_index: int | None = None
        self.opening = False  # inside the fade in from black that opens the video
        self.opening_last = -1
        self.dark_start: _Frame | None = None  # first black frame of the current black run
        self.ramp: list[_Frame] = []  # frames brightening after a black run (a fade in?)
        self.seen_light = False

    def add(self, frame: _Frame) -> None:
        if self.first_index is None:
            self.first_index = frame.index
            self.opening = frame.brightness < _DARK
        elif self.opening:
            # A video that opens on black and brightens frame after frame is fading in: the
            # jumps of its encoding are no cuts. The opening ends at the first frame that is
            # neither black nor brighter than the one before.
            prev = self.history[-1].brightness
            # A jump straight out of black to a lit frame is a hard cut, not a fade.
            self.opening = (frame.brightness < _DARK
                            or prev + 0.1 < frame.brightness < prev + 2 * _DARK)
        if self.opening:
            self.opening_last = frame.index
        self._fades(frame)
        self.history.append(_Frame(frame.index, frame.time, frame.score, frame.brightness))
        self.buffer.append(frame)
        if len(self.buffer) == self.buffer.maxlen:
            self._judge(self.window)

    def finish(self) -> list[Cut]:
        # The last frames are judged with the window they have (PySceneDetect never judges them).
        for k in range(self.window + 1, len(self.buffer)):
            self._judge(k)
        if self.ramp:
            self._fade_in_done()
        cuts = sorted(self.cuts, key=lambda c: c.frame)
        if self.dark_start is not None:
            # The video ends on black: boundaries into that black (a closing fade out, or a
            # cut inside the fade's last frames) join no two shots.
            cuts = [c for c in cuts if c.time < self.dark_start.time - _END_MARGIN_S]
        return cuts

    def _judge(self, k: int) -> None:
        frames = list(self.buffer)
        target = frames[k]
        if target.index == self.first_index or target.index <= self.opening_last:
            return
        others = [f.score for i, f in enumerate(frames) if i != k]
        mean = sum(others) / len(others) if others else 0.0
        ratio = target.score / mean if mean > 1e-5 else (255.0 if target.score else 0.0)
        if self.t.low_ratio <= ratio < self.t.ratio and target.score >= self.t.min_content:
            # Second stage: in heavy motion the HSV change of a cut stands less far above its
            # neighbours'; the colour histogram, which motion barely moves, decides.
            around = [f.change for i, f in enumerate(frames) if i != k]
            mean_change = sum(around) / len(around)
            if target.change < self.t.hist_ratio * max(mean_change, 0.01):
                return
            ratio = self.t.ratio
        # Between two black frames, hue and saturation are noise: no cut there.
        dark = target.brightness < _DARK and frames[k - 1].brightness < _DARK
        if (ratio >= self.t.ratio and target.score >= self.t.min_content and not dark
                and target.index - self.last_cut >= self.min_len
                and target.change >= self.t.hist_min):
            self._add(Cut(target.index, target.time))

    def _add(self, cut: Cut) -> None:
        if cut.frame - self.last_cut < self.min_len:
            return
        self.cuts.append(cut)
        self.last_cut = cut.frame

    # Fades: a gradual slide of brightness into a run of black frames (fade out), or out of
    # one (fade in), over at least _FADE_MIN frames. Each is one boundary at its middle; a
    # hard cut to or from black is left to the content rule.

    def _fades(self, frame: _Frame) -> None:
        dark = frame.brightness < _DARK
        if self.ramp:
            if not dark and frame.brightness > self.ramp[-1].brightness + 0.1:
                self.ramp.append(frame)
                return
            self._fade_in_done()
        if dark:
            if self.dark_start is None:
                self.dark_start = frame
                self._fade_out()
            return
        if self.dark_start is not None:
            self.dark_start = None
            self.ramp = [frame]
            return
        self.seen_light = True

    def _fade_out(self) -> None:
        """The frames before this black run darkened one after another: a fade out."""
        run: list[_Frame] = []
        for f in reversed(self.history):
            if f.brightness < _DARK or (run and f.brightness <= run[-1].brightness + 0.1):
                break
            run.append(f)
        ramp = run[::-1]
        if len(ramp) >= _FADE_MIN:
            self._fade_boundary("fade_out", ramp, self.dark_start)

    def _fade_in_done(self) -> None:
        ramp, self.ramp = self.ramp, []
        if len(ramp) >= _FADE_MIN and self.seen_light and ramp[0].index > self.opening_last:
            self._fade_boundary("fade_in", ramp, None)
        self.seen_light = True

    def _fade_boundary(self, kind: str, ramp: list[_Frame], end: _Frame | None) -> None:
        middle = ramp[len(ramp) // 2]
        last = end or ramp[-1]
        span = Transition(kind, ramp[0].time, last.time, ramp[0].index, last.index)
        self._add(Cut(middle.index, middle.time, span))
