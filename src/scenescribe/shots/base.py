"""The shot-detector interface: a backend turns a video into cut points."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from scenescribe.backend import Backend
from scenescribe.progress import Progress
from scenescribe.records import VideoInfo


@dataclass(frozen=True, slots=True)
class Cut:
    """A hard cut: ``frame`` is the 0-based index of the first frame of the new shot."""

    frame: int
    time: float


class ShotDetector(Backend):
    """Finds cuts. Backends read frames through ``scenescribe.media`` (never their own decoder)."""

    # Options that change speed, never the cuts: kept out of the cache key.
    SPEED_OPTIONS = ("threads", "workers")

    def cache_key(self) -> dict[str, Any]:
        key = super().cache_key()
        key["options"] = {k: v for k, v in key["options"].items() if k not in self.SPEED_OPTIONS}
        return key

    @abstractmethod
    def detect(self, video: VideoInfo, progress: Progress) -> list[Cut]:
        """Cuts in time order; the first shot's start (frame 0) is not a cut."""
