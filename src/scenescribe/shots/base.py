"""The shot-detector interface: a backend turns a video into cut points."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scenescribe.backend import Backend
from scenescribe.media.spool import FrameSpool
from scenescribe.progress import Progress
from scenescribe.records import Transition, VideoInfo


@dataclass(frozen=True, slots=True)
class Cut:
    """A scene boundary: ``frame`` is the 0-based index of the first frame of the new shot.

    ``transition`` says how the shot begins: None for a hard cut (the default, "hard" in the
    scene record), or a gradual transition (dissolve, fade) whose middle is ``frame``.
    """

    frame: int
    time: float
    transition: Transition | None = None

    def record(self) -> Transition:
        """The transition the scene starting here records: its own, or a hard cut at it."""
        if self.transition is not None:
            return self.transition
        return Transition("hard", self.time, self.time, self.frame, self.frame)


class ShotDetector(Backend):
    """Finds cuts. Backends read frames through ``scenescribe.media`` (never their own decoder)."""

    # Options that change speed, never the cuts: kept out of the cache key.
    SPEED_OPTIONS = ("threads", "workers")
    # ``detect`` loads the model itself once its decoders have started, so a load that waits
    # for other stages' loads (the process lock) overlaps the decoding (``ShotsStage``).
    loads_while_decoding = False

    def cache_key(self) -> dict[str, Any]:
        key = super().cache_key()
        key["options"] = {k: v for k, v in key["options"].items() if k not in self.SPEED_OPTIONS}
        return key

    @abstractmethod
    def detect(self, video: VideoInfo, progress: Progress, spool: FrameSpool | None = None,
               decoded: Callable[[], None] | None = None) -> list[Cut]:
        """Boundaries in time order; the first shot's start (frame 0) is not one.

        A backend that sees gradual transitions returns each as one ``Cut`` at its middle with
        the span in ``Cut.transition``; a fade in from black before the first shot (or out to
        black after the last) joins no two shots and is not returned.

        ``spool`` (``media.spool``), when the backend decodes through ``scenescribe.media``,
        gets another stage's frames from the same decode and is sealed; a backend that
        ignores it leaves it unsealed, and that stage decodes on its own.

        ``decoded``, if given, may be called once every frame is decoded while the rest of the
        detection (a network over the frames) goes on: the cores are free for the next video's
        decode (``ShotsStage``). A backend whose decode ends with its detection never calls it.
        """
