"""A CPU shot detector without PySceneDetect's per-frame machinery: ``hsvcut``.

It scores frames as PySceneDetect's ``ContentDetector`` does (the mean absolute change of hue,
saturation and value between consecutive frames, on frames shrunk to ``downscale_width``) and
applies ``AdaptiveDetector``'s rule (a frame's score against the mean of its ``window``
neighbours on each side), then checks each candidate with independent measures: the
colour-histogram change across the cut, which a camera move or a flash barely shifts but a new
shot does, and the brightness-histogram change, which a colour-only jump (a phone camera's white
balance) leaves near 0. Black-and-white frames, whose hue and saturation carry nothing, are
scored on brightness alone. Per frame that is a few OpenCV calls on the small frames; the checks
run only for candidates (``hsvrule``). No PySceneDetect import, no BGR copy (OpenCV's RGB2HSV
reads the decoder's RGB directly), and no ``FrameTimecode``.

Fades to and from black are found from the mean brightness: a run of near-black frames between
two shots becomes one boundary at its middle, recorded as a ``fade`` transition; the fade in
from black that opens a video (and the fade out that ends it) joins no two shots and is not a
boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from scenescribe.media import DecodedFrame, iter_frames
from scenescribe.media.spool import FrameSpool
from scenescribe.progress import Progress
from scenescribe.records import VideoInfo
from scenescribe.shots.base import Cut, ShotDetector
from scenescribe.shots.hsvrule import DARK, Measures, Rule, Tuning, asdict
from scenescribe.shots.segments import detect_decoded
from scenescribe.shots.shrink import planes_size, small_rgb, small_size

log = logging.getLogger("scenescribe.shots")

_PROGRESS_STEP = 64


class HsvCutDetector(ShotDetector):
    """Adaptive HSV change plus a colour-histogram check; see the module docstring.

    Chosen on the shot corpus (``benchmarks/sweep_hsvcut.py``: a grid replayed over every
    clip's cached measures, highest pooled hard-cut F1; ``benchmarks/bench_shot_accuracy.py``
    measures the result beside the peers; README, "Why these defaults"):

    * ``ratio`` 3 and ``window`` 2 frames are PySceneDetect's own ``AdaptiveDetector`` defaults;
      scenescribe's earlier 0.4 s window and ratio 10, tuned on two clips, found 25 of the music
      video's 130 cuts, whose cuts fall inside each other's windows.
    * ``min_content`` 18 (PySceneDetect: 15): a one-frame jump during Big Buck Bunny's camera
      tilt (frame 139) scores 15.3.
    * ``hist_min`` 0.15: the 16x4x4 HSV histogram changes by at most 0.19 across the synthetic
      clip's cellular-automaton steps, which the adaptive rule alone takes for cuts; 0.15 and
      0.2 pool within a boundary of each other.
    * ``luma_min`` 0.12: the 32-bin brightness histogram changes by 0.02-0.11 across the 15
      colour jumps of a phone video (every 5 s, hue and saturation only), by 0.13 or more
      across every cut hsvcut found before.
    * ``mono_sat`` 8 and ``mono_hist_min`` 0.12: where both frames' mean saturation is under 8
      (a 1922 film, a 1928 cartoon: 0.0), the score is the value change alone, not a third of
      it, and the brightness histogram stands in for the colour one. Nosferatu's 9 cuts and
      Steamboat Willie's 3 were found 3 of 12 before.
    * Second stage, where the adaptive rule is unsure (ratio 1.5 to 3: a cut inside heavy motion,
      Tears of Steel's battle, Sintel's fight, the phone video): the candidate is a cut when its
      histogram change is at least 5 times the mean of its neighbours' and every lit 4x4 block
      of the picture changes by at least 5 (``block_min``): true cuts there 6.2 or more, a
      caption snapping in (an ad) 3.4, an explosion lighting half a church 1.7.
    * Quiet jumps (``quiet_ratio`` 20, ``quiet_min`` 8): a peak 20 times its neighbours' mean
      needs a score of only 8, and the brightness histogram, not the colour one: a screencast's
      page changes (scores 12-14 over still frames, same colours) 4 of 10 -> 8 of 10, for one
      false cut there and two in the 1922 film's flicker (pooled 0.960 -> 0.962).
    * A video that opens on black and brightens frame by frame is fading in: no cut there
      (Big Buck Bunny's fade-in scores a 3.2 ratio at frame 31). A jump out of black is a cut.
    """

    PREVIOUS = Tuning(ratio=3.0, window=2, min_content=18.0, hist_min=0.2, low_ratio=2.0,
                      hist_ratio=5.0)
    TUNING = replace(PREVIOUS, hist_min=0.15, low_ratio=1.5, mono_sat=8.0, mono_hist_min=0.12,
                     luma_min=0.12, quiet_ratio=20.0, quiet_min=8.0, block_min=5.0)

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
        return {**super().cache_key(), "tuning": asdict(self.tuning), "version": 2}

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "tuning": asdict(self.tuning)}

    def detect(self, video: VideoInfo, progress: Progress, spool: FrameSpool | None = None,
               decoded: Callable[[], None] | None = None) -> list[Cut]:
        return detect_decoded(self, video, progress, spool)

    def frame_format(self) -> dict[str, Any]:
        """How ``iter_frames`` decodes for this detector: the planes, shrunk here."""
        return {"pixel_format": "yuv420p"}

    def cuts_from_frames(self, frames: Iterable[DecodedFrame], fps: float,
                         advance: Callable[[float], None] | None = None) -> list[Cut]:
        """Boundaries of a frame stream (also one segment's stream, see ``segments``)."""
        rule = Rule(self.tuning, fps, max(1, round(self.options.min_scene_len * fps)))
        for f in frame_features(frames, self.options.downscale_width, advance,
                                self.tuning.mono_sat):
            rule.add(f)
        return rule.finish()


def frame_features(frames: Iterable[DecodedFrame], width: int,
                   advance: Callable[[float], None] | None = None,
                   mono_sat: float = 0.0) -> Iterator[Measures]:
    """Each frame's HSV change from the previous one, histogram change and brightness.

    Frames arrive as the decoder's I420 planes (``iter_frames(pixel_format="yuv420p")``),
    shrunk here to ``width`` (``shrink.small_rgb``), or as RGB already that small (a shared
    decode made them for TransNetV2 too). Where both frames are less
    saturated than ``mono_sat``, the score is the value change alone (not a third of it).
    """
    import cv2

    prev_hsv = None
    prev_sat = 0.0
    pending = 0
    size: tuple[int, int] | None = None
    for frame in frames:
        image = frame.image
        if image.ndim == 2:  # I420: (H * 3 / 2, W)
            if size is None:
                size = small_size(*planes_size(image), width)
            rgb = small_rgb(image, size)
        else:
            rgb = image
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        _, sat, brightness, _ = cv2.mean(hsv)
        saturation = max(sat, prev_sat)
        score = 0.0
        if prev_hsv is not None:
            h, s, v, _ = cv2.mean(cv2.absdiff(hsv, prev_hsv))
            score = v if saturation < mono_sat else (h + s + v) / 3.0
        # The histogram changes are computed only for the frames the rule asks about.
        yield Measures(frame.index, frame.time, score, brightness, hsv, prev_hsv,
                     saturation=saturation)
        prev_hsv, prev_sat = hsv, sat
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
            if brightness >= DARK:
                return -1
        elif not (brightness < DARK or prev + 0.1 < brightness < prev + 2 * DARK):
            break
        last, prev = frame.index, brightness
    return last
