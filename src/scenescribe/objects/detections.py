"""Detections of one frame as a struct of arrays (after supervision's ``Detections``).

One numpy array per field, not a list of tiny box objects: filtering is a boolean mask, and a
frame with fifty boxes costs four small arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

UNTRACKED = -1  # tracker_id of a detection that no track claimed


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """Boxes of one frame at ``time`` seconds.

    ``xyxy`` (N, 4) float32 pixels, ``confidence`` (N,) float32, ``class_id`` (N,) int64,
    ``tracker_id`` (N,) int64 with ``UNTRACKED`` (-1) where no track claimed the box.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray
    time: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must have shape (N, 4), got {self.xyxy.shape}")
        for name in ("confidence", "class_id", "tracker_id"):
            shape = getattr(self, name).shape
            if shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) to match xyxy, got {shape}")

    @classmethod
    def create(cls, xyxy: Any, confidence: Any, class_id: Any, tracker_id: Any = None,
               time: float = 0.0) -> Detections:
        """Build from array-likes, coercing dtypes; ``tracker_id=None`` means all untracked."""
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
        ids = (np.full(len(boxes), UNTRACKED, np.int64) if tracker_id is None
               else np.asarray(tracker_id, np.int64).reshape(-1))
        return cls(boxes, np.asarray(confidence, np.float32).reshape(-1),
                   np.asarray(class_id, np.int64).reshape(-1), ids, float(time))

    @classmethod
    def empty(cls, time: float = 0.0) -> Detections:
        return cls.create(np.zeros((0, 4)), [], [], None, time)

    @classmethod
    def from_ultralytics(cls, result: Any, time: float = 0.0) -> Detections:
        """From an ultralytics ``Results``; ``boxes.id`` is None when the tracker assigned none."""
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return cls.empty(time)
        ids = None if boxes.id is None else _numpy(boxes.id)
        return cls.create(_numpy(boxes.xyxy), _numpy(boxes.conf), _numpy(boxes.cls), ids, time)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Rows selected by a boolean mask, an index array or a slice (always a ``Detections``)."""
        if isinstance(index, (int, np.integer)):
            index = [index]  # keep the leading axis so the result is still a set of boxes
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index],
                          self.tracker_id[index], self.time)

    @property
    def tracked(self) -> np.ndarray:
        """Boolean mask of the boxes a track claimed."""
        return self.tracker_id != UNTRACKED


def _numpy(tensor: Any) -> np.ndarray:
    """A torch tensor (any device) or array as numpy."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu().numpy()
    return np.asarray(tensor)
