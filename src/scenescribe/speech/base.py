"""The speech-recognizer interface: transcribe a whole file once, with word times."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

from scenescribe.backend import Backend
from scenescribe.progress import Progress
from scenescribe.records import VideoInfo, Word


@dataclass(frozen=True, slots=True)
class SpeechResult:
    """Words of the whole file on the video's clock, and the detected language."""

    words: tuple[Word, ...] = ()
    language: str | None = None
    language_probability: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


class SpeechRecognizer(Backend):
    """Transcribes a file's audio once (never once per scene); words join scenes by midpoint."""

    @abstractmethod
    def transcribe(self, video: VideoInfo, progress: Progress) -> SpeechResult:
        """Transcribe ``video.path``; an empty result for files without audio or speech."""
