"""The speech-recognizer interface: transcribe a whole file once, with word times."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from scenescribe.backend import Backend
from scenescribe.media.audio_spool import AudioSpool
from scenescribe.progress import Progress, Task
from scenescribe.records import VideoInfo, Word


@dataclass(frozen=True, slots=True)
class SpeechResult:
    """Words of the whole file on the video's clock, and the detected language."""

    words: tuple[Word, ...] = ()
    language: str | None = None
    language_probability: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class AudioReads:
    """What a pooled stream's audio reader did: the seconds it spent on each video (by position
    in the call; a wait for a full queue included) and when it finished the last one; and, given
    by the caller, the spools a backend that ``fills_audio_spools`` writes each video's whole
    audio into (by the video's path; ``media.audio_spool.teeing``)."""

    seconds: dict[int, float] = field(default_factory=dict)
    finished_at: float | None = None  # time.perf_counter()
    spools: dict[str, AudioSpool] = field(default_factory=dict)


class SpeechRecognizer(Backend):
    """Transcribes a file's audio once (never once per scene); words join scenes by midpoint."""

    # ``transcribe_many`` starts reading the audio at once and loads the model only when its
    # first batch is ready, so ``SpeechStage`` may load it on another thread meanwhile.
    reads_while_loading = False
    # ``transcribe_many`` writes each video's 16 kHz mono audio into ``reads.spools`` (the sound
    # tagger reads it there instead of decoding it again).
    fills_audio_spools = False

    def phase_seconds(self) -> dict[str, float]:
        """Seconds spent so far in each phase of the model's work (``encode_s``, ``decode_s``,
        ``align_s``, ``words_s``), summed over every batch since the load; {} where the
        backend does not split its work. ``SpeechStage`` charges each video the difference."""
        return {}

    def transcribe(self, video: VideoInfo, progress: Progress) -> SpeechResult:
        """Transcribe ``video.path``; an empty result for files without audio or speech."""
        if not video.has_audio:
            return SpeechResult()
        self.load()
        task = progress.task("speech", total=video.duration)
        try:
            return self._transcribe(video, task)
        finally:
            task.close()

    def transcribe_many(self, videos: Sequence[tuple[VideoInfo, Progress]],
                        reads: AudioReads | None = None,
                        ) -> Iterator[tuple[int, SpeechResult | Exception]]:
        """Transcribe several videos: ``(position in videos, result or the exception that
        stopped that video)``, in any order. This default does one video after another; a
        batched backend pools every video's chunks (see ``hf_whisper``) and notes its audio
        reading in ``reads``."""
        for i, (video, progress) in enumerate(videos):
            try:
                result: SpeechResult | Exception = self.transcribe(video, progress)
            except Exception as exc:  # one video's failure; the caller reports it
                result = exc
            yield i, result

    @abstractmethod
    def _transcribe(self, video: VideoInfo, task: Task) -> SpeechResult:
        """The backend's work on a file that has audio; advance ``task`` by seconds done."""
