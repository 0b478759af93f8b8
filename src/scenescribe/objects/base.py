"""The object-tracker interface: tracked COCO objects summarised per scene."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence

from scenescribe.backend import Backend
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
