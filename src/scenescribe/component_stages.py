"""The Stage 1 components (speech, sounds, objects) and the stage that runs one per scene.

A component is one row of ``COMPONENTS``: its registry kind, the record field it fills, how it
produces per-scene lines and how a line becomes that field. Adding a component (say OCR) is its
backend file, a registry line, an options section and a row here (plus its record field).
Speech and objects run their models in stages of their own that need only the probe
(``speech_stages``, ``objects_stages``), beside shot detection; the sound tagger's stage reads
the speech stage's audio (``sounds_stages``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from scenescribe.backend import Backend
from scenescribe.errors import ConfigError
from scenescribe.graph import RunContext, StageFailed, StageOutput, Task
from scenescribe.media.audio_spool import AudioSpool
from scenescribe.objects.base import ObjectTracker
from scenescribe.progress import Progress
from scenescribe.records import ObjectSummary, Scene, SoundTag, Transcript
from scenescribe.registry import Kind
from scenescribe.sounds.base import SoundTagger
from scenescribe.speech.base import SpeechRecognizer
from scenescribe.stages import ModelStage, _finish, _named, _resume
from scenescribe.store import JsonlCheckpoint

B = TypeVar("B", bound=Backend)

Producer = Callable[[B, Task, list[Scene], Progress], Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class Component(Generic[B]):
    """A Stage 1 component: which backend kind, which record field, how lines are made and read.

    ``produce`` makes the per-scene lines of a ``ComponentStage``; it is None for a component
    planned as stages of its own (speech: ``speech_stages``), whose lines come from the stage
    named ``lines_from``.
    """

    kind: Kind
    backend_type: type[B]  # the typed seam: the interface its backends implement
    field: str
    produce: Producer[B] | None
    parse: Callable[[Mapping[str, Any]], Any]  # a checkpoint line -> the record field's value
    lines_from: str = ""  # the stage whose lines hold the field ("" for the component's own)
    inputs: tuple[str, ...] = ("probe", "shots")
    loads_first: bool = True  # its stage loads the model before the first scene (else lazily)

    def lines_stage(self, name: str) -> str:
        return self.lines_from or name


class ComponentStage(ModelStage):
    """One Stage 1 component over every video, resuming from its checkpoint."""

    def __init__(self, name: str, backend: Backend) -> None:
        self.name = name
        self.component = COMPONENTS[name]
        if self.component.produce is None:
            raise ValueError(f"{name} is planned as its own stages, not a ComponentStage")
        if not isinstance(backend, self.component.backend_type):
            raise ConfigError(f"{backend.name} is not a {self.component.backend_type.__name__}")
        self.field = self.component.field
        self.inputs = self.component.inputs
        super().__init__(backend)

    def _compute(self, task: Task, ctx: RunContext) -> StageOutput:
        ckpt, todo = _resume(task, self.name)
        with ckpt:
            if todo and self.component.loads_first:
                self.load()  # before the clock: load time is reported apart
            start = time.perf_counter()
            if todo:
                for line in self._lines(task, todo, _named(ctx, task)):
                    ckpt.append(line)
            return self.output(task, ckpt, todo, time.perf_counter() - start)

    def _lines(self, task: Task, todo: list[Scene], progress: Progress
               ) -> Iterator[dict[str, Any]]:
        """The checkpoint lines of ``todo``'s scenes: the component's ``produce``."""
        produce = self.component.produce
        assert produce is not None  # checked in __init__
        return produce(self.backend, task, todo, progress)

    def output(self, task: Task, ckpt: JsonlCheckpoint, todo: list[Scene],
               seconds: float) -> StageOutput:
        """The output once ``ckpt`` holds every scene (it is finished here)."""
        missing = [s.index for s in task.scenes if s.index not in ckpt.done]
        if missing:
            raise StageFailed(f"{self.backend.name} returned nothing for scene(s) {missing[:5]}")
        _finish(task, self.name, ckpt)
        meta = {k: v for k, v in ckpt.done.get(-1, {}).items() if k != "index"}
        return StageOutput(task.key, not todo, meta=meta, facts=self.backend.facts(),
                           lines={i: line for i, line in ckpt.done.items() if i >= 0},
                           timing={"backend": self.backend.name, **self.load.timing(),
                                   "compute_s": seconds})

    def close(self) -> None:
        self.backend.unload()


def produce_sounds(backend: SoundTagger, task: Task, todo: list[Scene], progress: Progress,
                   audio: AudioSpool | None = None) -> Iterator[dict[str, Any]]:
    """``audio``: the video's audio as another stage decoded it (``sounds_stages``)."""
    for index, tags in backend.tag_scenes(task.info, todo, progress, audio=audio):
        yield {"index": index, "sounds": [t.to_dict() for t in tags]}


def produce_objects(backend: ObjectTracker, task: Task, todo: list[Scene],
                    progress: Progress) -> Iterator[dict[str, Any]]:
    """The ``detections`` stage's boxes tracked through each scene (``objects_stages``)."""
    detected = task.inputs["detections"].meta["detected"]
    for index, objects in backend.track_detected(task.info, todo, detected, progress):
        yield objects_line(index, objects)


def objects_line(index: int, objects: Sequence[ObjectSummary]) -> dict[str, Any]:
    return {"index": index, "objects": [o.to_dict() for o in objects]}


COMPONENTS: dict[str, Component[Any]] = {
    "speech": Component("speech", SpeechRecognizer, "transcript", None,
                        lambda line: Transcript.from_dict(line.get("transcript")),
                        lines_from="transcript"),
    "sounds": Component("sounds", SoundTagger, "sounds", produce_sounds,
                        lambda line: tuple(SoundTag.from_dict(s) for s in line.get("sounds", ()))),
    # Tracking only: the model ran in the ``detections`` stage, before the cuts were known; it
    # is loaded here only for a scene too short to hold a sampled frame.
    "objects": Component("objects", ObjectTracker, "objects", produce_objects,
                         lambda line: tuple(ObjectSummary.from_dict(o)
                                            for o in line.get("objects", ())),
                         inputs=("probe", "shots", "detections"), loads_first=False),
}
