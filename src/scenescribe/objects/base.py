"""The object-tracker interface: tracked COCO objects summarised per scene."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence

from scenescribe.backend import Backend
from scenescribe.media import FrameRequest, Pick
from scenescribe.progress import Progress
from scenescribe.records import ObjectSummary, Scene, VideoInfo


class ObjectTracker(Backend):
    """Detects and tracks objects on frames sampled at ``options.sample_fps``."""

    @abstractmethod
    def track_scenes(self, video: VideoInfo, scenes: Sequence[Scene],
                     progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """Yield ``(scene index, per-label summaries)`` for each scene given, in order.

        Tracks restart at every scene boundary, so track counts are per scene.
        """

    def frame_requests(self, video: VideoInfo, scenes: Sequence[Scene]) -> list[FrameRequest]:
        """The frames ``track_frames`` needs from a decode pass shared with other consumers."""
        raise NotImplementedError(f"{type(self).__name__} decodes its own frames")

    def track_frames(self, video: VideoInfo, scenes: Sequence[Scene], picks: Iterator[Pick],
                     progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """``track_scenes`` on the picks of a shared pass over ``frame_requests``."""
        raise NotImplementedError(f"{type(self).__name__} decodes its own frames")
