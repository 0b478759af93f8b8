"""The object-tracker interface: objects detected at sampled times, tracked per scene.

Two steps, so that detection need not wait for the cuts: ``detect_frames`` looks at the frames
sampled at ``options.sample_fps`` (the ``detections`` stage runs it over the whole video, keyed on
the probe alone), and ``track_detected`` follows those boxes through each scene (the ``objects``
stage, once the cuts are known). ``track_scenes`` does both for a list of scenes.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence

from scenescribe.backend import Backend
from scenescribe.media.spool import TickSpec
from scenescribe.media.stream import DecodedFrame
from scenescribe.objects.detected import (
    FrameBoxes,
    VideoDetections,
    in_time_order,
    scene_ticks,
    tick_count,
)
from scenescribe.progress import Progress
from scenescribe.records import ObjectSummary, Scene, VideoInfo


class ObjectTracker(Backend):
    """Detects objects on frames sampled at ``options.sample_fps`` and tracks them per scene."""

    @property
    def sample_fps(self) -> float:
        return float(self.options.sample_fps)

    def ticks(self, video: VideoInfo) -> int:
        """How many sampling ticks (``k / sample_fps``) the whole video holds."""
        return tick_count(video.duration, self.sample_fps)

    def tick_spec(self, video: VideoInfo) -> TickSpec | None:
        """The frames ``detect_frames`` decodes, for a decode that keeps them in a spool
        (``media.spool``) beforehand; None when the backend decodes no frames of its own."""
        return None

    @abstractmethod
    def detect_frames(self, video: VideoInfo, ticks: Sequence[int], progress: Progress,
                      frames: Iterable[tuple[int, DecodedFrame]] | None = None
                      ) -> Iterator[FrameBoxes]:
        """Untracked boxes of the first frame at or after each tick ``k / sample_fps``, in time
        order (one frame serves every tick it covers). The model is loaded if it is not.

        ``frames``: those picks already decoded, ``(tick, frame)`` in time order (a spool of
        ``tick_spec``'s frames); None decodes them here."""

    @abstractmethod
    def track_detected(self, video: VideoInfo, scenes: Sequence[Scene],
                       detected: VideoDetections,
                       progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """Yield ``(scene index, per-label summaries)`` for each scene given, in time order,
        from ``detected`` (``detect_frames``' frames in time order, at least over the scenes,
        and the class names).

        Tracks restart at every scene boundary, so track counts are per scene; a scene that no
        frame falls in is looked at once, at its midpoint (loading the model if it must).
        """

    def track_scenes(self, video: VideoInfo, scenes: Sequence[Scene],
                     progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """Detect on the ticks inside ``scenes``, then track: both steps at once."""
        frames = (in_time_order(self.detect_frames(video, scene_ticks(scenes, self.sample_fps),
                                                   progress))
                  if video.has_video and scenes else [])
        names = self.names if self.loaded else {}
        yield from self.track_detected(video, scenes, VideoDetections(frames, names), progress)

    @property
    def names(self) -> dict[int, str]:
        """Class names by id; the model is loaded."""
        raise NotImplementedError(f"{type(self).__name__} names no classes")
