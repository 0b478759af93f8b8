"""The sound-tagger interface: AudioSet tags per scene."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence

from scenescribe.backend import Backend
from scenescribe.media.audio_spool import AudioSpool
from scenescribe.progress import Progress
from scenescribe.records import Scene, SoundTag, VideoInfo


class SoundTagger(Backend):
    """Tags each scene's audio; short scenes get at least ``options.min_context`` seconds."""

    @abstractmethod
    def tag_scenes(self, video: VideoInfo, scenes: Sequence[Scene], progress: Progress,
                   audio: AudioSpool | None = None) -> Iterator[tuple[int, list[SoundTag]]]:
        """Yield ``(scene index, tags highest first)`` for each scene given, in order.
        ``audio``: the video's decoded audio, another stage's (a tagger reading at its rate
        cuts its windows from it instead of decoding the file)."""
