"""The sound tagger's stage: its windows cut from the audio the speech stage already decoded.

``sounds`` is a ``ComponentStage`` that also gives the speech stage an empty spool for each
video's audio (``audio_spool_for``; ``media.audio_spool``). Speech reads every video's whole
audio at the start of the run, while its model loads, so by the time the tagger starts on a video
(after its shots) that audio is on disk, and the tagger reads its windows from it instead of
decoding the file again. A spool that is not sealed (speech cached, reading it still, or
failed) is left alone: the tagger decodes the file itself, as without speech. A spool it read
is removed once its video is tagged; whatever is left is removed at the run's end
(``pipeline.run``). ``SCENESCRIBE_AUDIO_SPOOL=0`` (or ``SCENESCRIBE_SPOOL_GB=0``, no spools at
all) turns it off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scenescribe.component_stages import ComponentStage, produce_sounds
from scenescribe.graph import Task
from scenescribe.knobs import env_count
from scenescribe.media import SAMPLE_RATE
from scenescribe.media.audio_spool import AudioSpool, audio_spool_folder, fits
from scenescribe.media.spool import discard
from scenescribe.progress import Progress
from scenescribe.records import Scene
from scenescribe.sounds.base import SoundTagger

NO_SPOOL = "SCENESCRIBE_AUDIO_SPOOL"  # knob: 0 decodes the audio again (for A/B measurements)


class SoundsStage(ComponentStage):
    """Each scene's sound tags, from the speech stage's spooled audio where there is some."""

    def __init__(self, backend: SoundTagger) -> None:
        super().__init__("sounds", backend)
        self.tagger = backend  # typed

    def audio_spool_for(self, task: Task) -> AudioSpool | None:
        """An empty spool for the audio of ``task``'s video (a stage's task with the probe among
        its inputs), or None: no audio, too large for the spool budget or the disk, or a sealed
        spool of it is there already (``AudioSpool.create``)."""
        info = task.info
        if not info.has_audio or env_count(NO_SPOOL) == 0:
            return None
        where = audio_spool_folder(task.video.folder.work, task.inputs["probe"].key)
        if not fits(where, info.duration, SAMPLE_RATE):
            return None
        return AudioSpool.create(where, SAMPLE_RATE)

    def _lines(self, task: Task, todo: list[Scene], progress: Progress
               ) -> Iterator[dict[str, Any]]:
        where = audio_spool_folder(task.video.folder.work, task.inputs["probe"].key)
        audio = AudioSpool.open(where, SAMPLE_RATE)
        yield from produce_sounds(self.tagger, task, todo, progress, audio)
        if audio is not None:
            discard(where)  # every scene tagged: no one reads it again
