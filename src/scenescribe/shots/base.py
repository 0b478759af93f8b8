"""The shot-detector interface: a backend turns a video into cut points."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

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

    @abstractmethod
    def detect(self, video: VideoInfo, progress: Progress) -> list[Cut]:
        """Cuts in time order; the first shot's start (frame 0) is not a cut."""
