"""Per-scene object summaries from a stream of per-frame detections.

State is a few numbers and a set of track ids per class, so a scene of any length costs the
same memory: frames are folded in as they come and then dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from scenescribe.objects.detections import Detections
from scenescribe.records import ObjectSummary


@dataclass(slots=True)
class _ClassStats:
    max_count: int = 0
    confidence_sum: float = 0.0
    detections: int = 0
    track_ids: set[int] = field(default_factory=set)


class SceneObjects:
    """Accumulates one scene's detections; ``summaries()`` gives the per-label result."""

    def __init__(self, names: Mapping[int, str]) -> None:
        self.names = names
        self.frames = 0
        self._stats: dict[int, _ClassStats] = {}

    def add(self, detections: Detections) -> None:
        """Fold in one sampled frame (a frame with no boxes still counts as seen)."""
        self.frames += 1
        if len(detections) == 0:
            return
        classes, counts = np.unique(detections.class_id, return_counts=True)
        for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
            mine = detections[detections.class_id == cls]
            stats = self._stats.setdefault(cls, _ClassStats())
            stats.max_count = max(stats.max_count, count)
            stats.confidence_sum += float(mine.confidence.sum(dtype=np.float64))
            stats.detections += count
            stats.track_ids.update(mine.tracker_id[mine.tracked].tolist())

    def summaries(self) -> list[ObjectSummary]:
        """One summary per label, most seen at once first, then most confident.

        ``tracks`` is the number of distinct track ids, but never less than ``max_count``: that
        many objects were seen together, so at least that many existed even where the tracker
        confirmed fewer (or, with no ids at all, none).
        """
        out = [ObjectSummary(label=self._label(cls), max_count=s.max_count,
                             tracks=max(len(s.track_ids), s.max_count),
                             confidence=s.confidence_sum / s.detections)
               for cls, s in self._stats.items()]
        out.sort(key=lambda o: (-o.max_count, -o.confidence, o.label))
        return out

    def _label(self, cls: int) -> str:
        return self.names.get(cls, f"class_{cls}")


def summarize(frames: Iterable[Detections], names: Mapping[int, str]) -> list[ObjectSummary]:
    """Summaries of one scene from its frames' detections."""
    scene = SceneObjects(names)
    for detections in frames:
        scene.add(detections)
    return scene.summaries()
