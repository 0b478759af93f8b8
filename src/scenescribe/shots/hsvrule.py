"""The rule of ``hsvcut`` (``fast.HsvCutDetector``): candidates from a frame's HSV change against
its neighbours', checked by histogram changes; fades from brightness.

``Rule`` streams one ``Measures`` per frame and keeps a few seconds of them; every check beyond
the per-frame score (colour and brightness histograms, the 4x4 block change) is computed only
for the frames it judges, from the two HSV frames the measures hold.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from scenescribe.records import Transition
from scenescribe.shots.base import Cut

_HIST_BINS = (16, 4, 4)  # hue, saturation, value: hue carries most of a shot's identity
_LUMA_BINS = 32
DARK = 24.0  # mean value (0-255) under which a frame counts as black, for fades
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
    mono_sat: float = 0.0  # frames less saturated than this (0-255) are scored on value alone
    mono_hist_min: float = 0.2  # and need this brightness-histogram change instead of hist_min
    luma_min: float = 0.0  # brightness-histogram change (0-1) a cut must reach
    quiet_ratio: float = 1e9  # a peak this far above its neighbours (a jump in a still
    quiet_min: float = 1e9  # picture) needs this score, and the brightness histogram decides
    block_min: float = 0.0  # second stage: every lit 4x4 block must change this much (0-255)


def asdict(t: Tuning) -> dict[str, float]:
    return {f.name: getattr(t, f.name) for f in fields(t)}


@dataclass(slots=True)
class Measures:
    """One frame's measures; the histogram changes are computed from the HSV frames on demand."""

    index: int
    time: float
    score: float
    brightness: float
    hsv: np.ndarray | None = None
    prev_hsv: np.ndarray | None = None
    known_change: float | None = None
    saturation: float = 255.0
    known_luma: float | None = None
    known_block: float | None = None

    @property
    def change(self) -> float:
        """Change of the 16x4x4 HSV histogram: 0 the same colours, 1 none in common."""
        if self.known_change is None:
            self.known_change = self._pair(_hist_change)
        return self.known_change

    @property
    def luma_change(self) -> float:
        """Change of the brightness (HSV value) histogram, 32 bins: 0 same, 1 disjoint."""
        if self.known_luma is None:
            self.known_luma = self._pair(_luma_change)
        return self.known_luma

    @property
    def block_change(self) -> float:
        """The least mean HSV change of the 4x4 blocks of the picture not black in both frames."""
        if self.known_block is None:
            self.known_block = self._pair(_least_block_change)
        return self.known_block

    def _pair(self, measure: Callable[[np.ndarray, np.ndarray], float]) -> float:
        return 0.0 if self.hsv is None or self.prev_hsv is None else measure(self.hsv,
                                                                              self.prev_hsv)


def _hist(hsv: np.ndarray) -> np.ndarray:
    import cv2

    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(_HIST_BINS), [0, 180, 0, 256, 0, 256])
    return hist / max(float(hist.sum()), 1.0)


def _changes(frame: Measures, mono: bool) -> tuple[float, float]:
    """(histogram change, brightness-histogram change); on black-and-white frames both are the
    brightness histogram's, which sees what the coarse 4-bin value axis of ``_hist`` misses."""
    luma = frame.luma_change
    return (luma if mono else frame.change), luma


def _hist_change(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(np.minimum(_hist(a), _hist(b)).sum())


def _luma_change(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    ha, hb = (cv2.calcHist([x], [2], None, [_LUMA_BINS], [0, 256]) for x in (a, b))
    return 1.0 - float(np.minimum(ha / max(float(ha.sum()), 1.0),
                                  hb / max(float(hb.sum()), 1.0)).sum())


def _least_block_change(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    area = cv2.INTER_AREA
    diff = cv2.absdiff(a, b).astype(np.float32).mean(axis=2)  # the content score, per pixel
    blocks = cv2.resize(diff, (4, 4), interpolation=area)
    lit = np.maximum(cv2.resize(a[:, :, 2], (4, 4), interpolation=area),
                     cv2.resize(b[:, :, 2], (4, 4), interpolation=area)) >= DARK
    return float(blocks[lit].min()) if lit.any() else 0.0


class Rule:
    """Streams frames' scores and keeps the boundaries; memory is a few seconds of frames."""

    def __init__(self, tuning: Tuning, fps: float, min_len: int) -> None:
        self.t = tuning
        self.window = tuning.window
        self.min_len = min_len
        self.buffer: deque[Measures] = deque(maxlen=2 * self.window + 1)
        self.history: deque[Measures] = deque(maxlen=max(8, round(_FADE_MAX_S * fps)))
        self.cuts: list[Cut] = []
        self.last_cut = -(10**9)
        self.first_index: int | None = None
        self.opening = False  # inside the fade in from black that opens the video
        self.opening_last = -1
        self.dark_start: Measures | None = None  # first black frame of the current black run
        self.ramp: list[Measures] = []  # frames brightening after a black run (a fade in?)
        self.seen_light = False

    def add(self, frame: Measures) -> None:
        if self.first_index is None:
            self.first_index = frame.index
            self.opening = frame.brightness < DARK
        elif self.opening:
            # A video that opens on black and brightens frame after frame is fading in: the
            # jumps of its encoding are no cuts. The opening ends at the first frame that is
            # neither black nor brighter than the one before.
            prev = self.history[-1].brightness
            # A jump straight out of black to a lit frame is a hard cut, not a fade.
            self.opening = (frame.brightness < DARK
                            or prev + 0.1 < frame.brightness < prev + 2 * DARK)
        if self.opening:
            self.opening_last = frame.index
        self._fades(frame)
        self.history.append(Measures(frame.index, frame.time, frame.score, frame.brightness))
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
        t = self.t
        others = [f.score for i, f in enumerate(frames) if i != k]
        mean = sum(others) / len(others) if others else 0.0
        ratio = target.score / mean if mean > 1e-5 else (255.0 if target.score else 0.0)
        # A jump in a still picture (a screencast switching windows) stands out at a lower score.
        quiet = ratio >= t.quiet_ratio
        if target.score < (min(t.quiet_min, t.min_content) if quiet else t.min_content):
            return
        # Black-and-white frames: hue and saturation carry nothing, brightness decides.
        mono = target.saturation < t.mono_sat
        if t.low_ratio <= ratio < t.ratio:
            # Second stage: in heavy motion the HSV change of a cut stands less far above its
            # neighbours'; the colour histogram, which motion barely moves, decides.
            around = [_changes(f, mono)[0] for i, f in enumerate(frames) if i != k]
            mean_change = sum(around) / len(around)
            if _changes(target, mono)[0] < t.hist_ratio * max(mean_change, 0.01):
                return
            # A caption snapping in or a local flash leaves part of the picture as it was.
            if t.block_min and target.block_change < t.block_min:
                return
            ratio = t.ratio
        # Between two black frames, hue and saturation are noise: no cut there.
        dark = target.brightness < DARK and frames[k - 1].brightness < DARK
        if ratio < t.ratio or dark or target.index - self.last_cut < self.min_len:
            return
        # A quiet jump (a screencast's new page) keeps its colours: brightness decides there too.
        change, luma = _changes(target, mono or quiet)
        # A colour-only jump (a phone camera's white balance) leaves brightness where it was.
        if change < (t.mono_hist_min if mono else t.hist_min) or luma < t.luma_min:
            return
        self._add(Cut(target.index, target.time))

    def _add(self, cut: Cut) -> None:
        if cut.frame - self.last_cut < self.min_len:
            return
        self.cuts.append(cut)
        self.last_cut = cut.frame

    # Fades: a gradual slide of brightness into a run of black frames (fade out), or out of
    # one (fade in), over at least _FADE_MIN frames. Each is one boundary at its middle; a
    # hard cut to or from black is left to the content rule.

    def _fades(self, frame: Measures) -> None:
        dark = frame.brightness < DARK
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
        run: list[Measures] = []
        for f in reversed(self.history):
            if f.brightness < DARK or (run and f.brightness <= run[-1].brightness + 0.1):
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

    def _fade_boundary(self, kind: str, ramp: list[Measures], end: Measures | None) -> None:
        middle = ramp[len(ramp) // 2]
        last = end or ramp[-1]
        span = Transition(kind, ramp[0].time, last.time, ramp[0].index, last.index)
        self._add(Cut(middle.index, middle.time, span))
