"""PySceneDetect's content detectors fed with frames from ``scenescribe.media``.

PySceneDetect's own decoding (its ``VideoStream`` and ``SceneManager``) is bypassed: frames come
from ``iter_frames``, shrunk inside FFmpeg's scaler to ``options.downscale_width``, and are handed
to the detector's ``process_frame`` one by one. PySceneDetect 0.7 counts in ``FrameTimecode``;
we give it the decoded frame's display index and map the cuts it returns back to the decoded
frames' timestamps, so variable-frame-rate video gets true times, not ``frame / fps``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from scenescribe.media import DecodedFrame
from scenescribe.media.spool import FrameSpool
from scenescribe.progress import Progress
from scenescribe.records import VideoInfo
from scenescribe.shots.base import Cut, ShotDetector
from scenescribe.shots.segments import detect_decoded

log = logging.getLogger("scenescribe.shots")

# Progress is reported in steps of this many frames: one call per frame costs more than the
# detector itself on tiny frames.
_PROGRESS_STEP = 64


class _PySceneDetectShotDetector(ShotDetector):
    """Shared driver: decode, convert to BGR, feed ``process_frame``, map cuts to timestamps."""

    DEFAULT_THRESHOLD: float  # each backend's tuned value, used when options.threshold is None

    def _load(self) -> Any:
        import cv2  # noqa: F401  (PySceneDetect's detectors need it; fail here, not mid-video)
        import scenedetect.detectors

        return scenedetect.detectors

    @property
    def threshold(self) -> float:
        t = self.options.threshold
        return self.DEFAULT_THRESHOLD if t is None else float(t)

    def _make_detector(self, fps: float) -> Any:
        raise NotImplementedError

    def tuning(self) -> dict[str, float]:
        """The detector's settings that options do not show (defaults may change)."""
        return {"threshold": self.threshold}

    def cache_key(self) -> dict[str, Any]:
        # A new PySceneDetect release or a retuned default may move cuts: no stale cache.
        return {**super().cache_key(), "library": f"scenedetect {_version('scenedetect')}",
                "tuning": self.tuning()}

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "library": f"scenedetect {_version('scenedetect')}",
                "tuning": self.tuning()}

    def min_scene_frames(self, fps: float) -> int:
        """``options.min_scene_len`` in frames, at least 1, so PySceneDetect can filter flashes."""
        return max(1, round(self.options.min_scene_len * fps))

    def detect(self, video: VideoInfo, progress: Progress, spool: FrameSpool | None = None,
               decoded: Callable[[], None] | None = None) -> list[Cut]:
        return detect_decoded(self, video, progress, spool)

    def frame_format(self) -> dict[str, Any]:
        """How ``iter_frames`` decodes for this detector: RGB shrunk by FFmpeg's scaler."""
        return {"width": self.options.downscale_width or None}

    def cuts_from_frames(self, frames: Iterable[DecodedFrame], fps: float,
                         advance: Callable[[float], None] | None = None) -> list[Cut]:
        """Cuts of a frame stream (a whole video, or one segment's frames)."""
        return run_detector(self._make_detector(fps), frames, fps, advance)


class AdaptiveShotDetector(_PySceneDetectShotDetector):
    """PySceneDetect's ``AdaptiveDetector``: a frame's content change against its neighbours'.

    Tuned on ../shared/media (content scores measured at 256 px width):

    * ``window_width``: 0.4 s of frames each side (10 at 25 fps, never under 2) instead of
      PySceneDetect's fixed 2 frames. A shot whose picture jumps every few frames (the synthetic
      clip's cellular automata step every 5 frames with scores 20-46) then has those jumps in its
      own average, while a hard cut still stands far above its neighbours. With 2 frames either
      side, every automaton step sits between unchanged frames and looks like a cut.
    * ``threshold`` (the adaptive ratio) 10: with that window, true cuts score 27-120 on both
      clips, the worst false candidates 7.4 (automaton step) and 5.1 (bbb camera tilt). 10 sits
      between with margin on both sides; PySceneDetect's 3.0 fires inside bbb's fade-in from
      black and on its tilt.
    * ``min_content_val`` stays at PySceneDetect's 15, so a near-static shot's tiny noise cannot
      produce a high ratio.

    The last ``window_width`` frames are never judged (they lack a right-hand window); a cut there
    would leave a final shot under 0.4 s, which ``cuts_to_scenes`` merges at the default
    ``min_scene_len`` anyway.
    """

    DEFAULT_THRESHOLD = 10.0
    WINDOW_SECONDS = 0.4
    MIN_CONTENT_VAL = 15.0

    def window_frames(self, fps: float) -> int:
        return max(2, round(self.WINDOW_SECONDS * fps))

    def tuning(self) -> dict[str, float]:
        return {**super().tuning(), "window_s": self.WINDOW_SECONDS,
                "min_content_val": self.MIN_CONTENT_VAL}

    def _make_detector(self, fps: float) -> Any:
        return self.model.AdaptiveDetector(
            adaptive_threshold=self.threshold,
            min_scene_len=self.min_scene_frames(fps),
            window_width=self.window_frames(fps),
            min_content_val=self.MIN_CONTENT_VAL)


class ContentShotDetector(_PySceneDetectShotDetector):
    """PySceneDetect's ``ContentDetector``: a cut where the HSV change between frames is large.

    ``threshold`` stays at PySceneDetect's 27, its default for real footage. On ../shared/media
    true cuts score 61-139 and bbb's fade-in and flapping bird stay under it (the fade's one jump
    of 68, at frame 9, falls inside the first ``min_scene_len``, where the flash filter holds it).
    The synthetic clip's cellular-automaton shots jump by 28-46 every 5 frames: only a threshold
    near 50 would pass them, giving up every real cut that scores 27-50 to fit one synthetic
    shot. So this backend splits such shots (tested as a known limit); the adaptive one does not.
    """

    DEFAULT_THRESHOLD = 27.0

    def _make_detector(self, fps: float) -> Any:
        return self.model.ContentDetector(
            threshold=self.threshold,
            min_scene_len=self.min_scene_frames(fps))


def run_detector(detector: Any, frames: Iterable[DecodedFrame], fps: float,
                 advance: Callable[[float], None] | None = None) -> list[Cut]:
    """Feed ``frames`` (RGB) to a PySceneDetect detector; cuts carry the frames' timestamps.

    Only the times of the last frames are kept: a detector reports a cut at most its
    ``event_buffer_length`` frames late, so memory stays flat however long the video.
    """
    import cv2
    from scenedetect import FrameTimecode

    times = _RecentTimes(2 * detector.event_buffer_length + 16, fps)
    cuts: list[Cut] = []
    last = None
    pending = 0
    for frame in frames:
        times.add(frame.index, frame.time)
        last = FrameTimecode(frame.index, fps=fps)
        # PySceneDetect works on OpenCV's BGR order; its hue channel is wrong on RGB input.
        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        cuts += [times.cut(tc.frame_num) for tc in detector.process_frame(last, bgr)]
        pending += 1
        if advance is not None and pending >= _PROGRESS_STEP:
            advance(pending)
            pending = 0
    if advance is not None and pending:
        advance(pending)
    if last is not None:
        cuts += [times.cut(tc.frame_num) for tc in detector.post_process(last)]
    return sorted(set(cuts), key=lambda c: c.frame)


class _RecentTimes:
    """Timestamps of the last ``size`` decoded frames, looked up by display index."""

    def __init__(self, size: int, fps: float) -> None:
        self._times: deque[float] = deque(maxlen=max(1, size))
        self._last_index = -1
        self._fps = fps

    def add(self, index: int, time: float) -> None:
        self._times.append(time)
        self._last_index = index

    def cut(self, index: int) -> Cut:
        back = self._last_index - index
        if 0 <= back < len(self._times):
            return Cut(index, self._times[-1 - back])
        # Not expected (detectors report within their buffer); estimate rather than fail.
        log.debug("frame %d is outside the recent-time buffer; estimating its time", index)
        return Cut(index, max(0.0, self._times[-1] - back / self._fps))


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
