"""The captioner interface: scenes' frames in, one caption per scene out, batched."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from scenescribe.backend import Backend
from scenescribe.progress import Progress
from scenescribe.records import Caption

# The reference pipeline's caption instruction.
DEFAULT_PROMPT = (
    "Describe this video scene in detail. The images are frames from the same scene "
    "(start and middle). Describe the setting, the people or objects present, their actions, "
    "and any visible text."
)


@dataclass(frozen=True, slots=True)
class CaptionRequest:
    """One scene to caption: its sampled frames (absolute JPEG paths) and optional grounding."""

    index: int
    frames: tuple[str, ...]
    context: str = ""  # transcript, objects and sounds, when grounding is on


class Captioner(Backend):
    """A vision-language model writing one caption per scene."""

    # The decoder gives the same tokens whichever runs (static_decode's tests): speed only.
    SPEED_OPTIONS = (*Backend.SPEED_OPTIONS, "decoder")

    @abstractmethod
    def caption(self, requests: Sequence[CaptionRequest],
                progress: Progress) -> Iterator[tuple[int, Caption]]:
        """Yield ``(scene index, caption)``; order may differ from ``requests`` (bucketing)."""
