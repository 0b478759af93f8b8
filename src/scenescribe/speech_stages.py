"""Speech as two stages: the recognizer over each whole file, then its words joined onto scenes.

``speech`` runs the model. Its inputs are the probe alone (the audio does not depend on where
the cuts fall), so it runs beside shot detection rather than after it, and a change to the shot
settings never transcribes again. It keeps each video's timed words and language in one JSON
file. ``transcript`` is the cheap join: each word goes to the scene holding its midpoint; it
fills the records' ``transcript`` field and is what grounded captions read.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from scenescribe.graph import (
    Failure,
    Outcome,
    RunContext,
    Stage,
    StageFailed,
    StageOutput,
    Task,
    each,
    guarded,
)
from scenescribe.media.audio_spool import AudioSpool
from scenescribe.progress import PrefixedProgress
from scenescribe.records import Scene, Word
from scenescribe.speech.base import AudioReads, SpeechRecognizer, SpeechResult
from scenescribe.speech.join import assign_words
from scenescribe.stages import LazyLoad, _finish, _resume
from scenescribe.store import atomic_write_json, read_json

TRANSCRIPT_VERSION = 1  # bump when the join's output changes


class AudioConsumer(Protocol):
    def audio_spool_for(self, task: Task) -> AudioSpool | None: ...


class SpeechStage(Stage):
    """Every video's words and language, from one pooled stream of all their audio."""

    name = "speech"
    inputs = ("probe",)
    concurrent = True

    def __init__(self, backend: SpeechRecognizer) -> None:
        self.backend = backend
        self.load = LazyLoad(backend)
        # A later stage that reads the same audio (the sound tagger): its
        # ``audio_spool_for(task)`` gives a spool the reader fills, or None.
        self.audio_consumer: AudioConsumer | None = None

    def identity(self) -> dict[str, Any]:
        return dict(self.backend.cache_key())

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        """Finished videos are read back; the rest go to the recognizer's ``transcribe_many``
        together (one batched stream for GPU Whisper), each saved as its result arrives. A
        video's ``compute_s`` is the stream's time since the previous result, so the videos'
        times add up to the stream's."""
        outcomes: dict[int, Outcome] = {}
        pending: list[int] = []
        for i, task in enumerate(tasks):
            saved = _read(self._file(task))
            if saved is None:
                pending.append(i)
            else:
                outcomes[i] = self._output(task, saved, cached=True, seconds=0.0)
        if not pending:
            return outcomes
        loading = None
        if self.backend.reads_while_loading:
            # The audio is read (seconds of CPU for W1) while the model loads (12-16 s for
            # Whisper large-v3 on the H200), instead of after it.
            loading = self.load.in_background()
        else:
            try:
                self.load()
            except Exception as exc:  # every video waiting for the model fails with it
                return {**outcomes, **{i: guarded(self.name, tasks[i],
                                                  functools.partial(_raise, exc))
                                       for i in pending}}
        jobs = [(tasks[i].info, PrefixedProgress(ctx.progress, tasks[i].name)) for i in pending]
        reads = AudioReads(spools=self._spools([tasks[i] for i in pending]))
        last = time.perf_counter()
        phases = self.backend.phase_seconds()
        try:
            for j, result in self.backend.transcribe_many(jobs, reads):
                now = time.perf_counter()
                task = tasks[pending[j]]
                # The compute clock starts once the model is loaded: a load reported apart.
                seconds = now - max(last, self.load.done_at)
                # Its share of the stream's phases: those of the batches since the last result.
                phases, before = self.backend.phase_seconds(), phases
                reading = {**_reading(reads, j, self.load.done_at),
                           **{k: v - before.get(k, 0.0) for k, v in phases.items()}}
                outcomes[pending[j]] = guarded(self.name, task, functools.partial(
                    self._save, result=result, seconds=seconds, reading=reading), ctx)
                last = time.perf_counter()
        except Exception as exc:  # the model's failure: every video still waiting fails with it
            for i in pending:
                if i not in outcomes:
                    outcomes[i] = guarded(self.name, tasks[i], functools.partial(_raise, exc))
        finally:
            if loading is not None:
                loading.join()
            for spool in reads.spools.values():
                spool.abandon()  # those never filled whole (a stopped stream, a failed read)
        for i in pending:  # a recognizer that skipped a video is a bug, reported on that video
            if i not in outcomes:
                outcomes[i] = Failure(self.name, f"{tasks[i].video.source}: {self.name}: "
                                                 "no result from the recognizer")
        return outcomes

    def _spools(self, tasks: Sequence[Task]) -> dict[str, AudioSpool]:
        """Spools for the videos' audio by path, where the consumer wants them and the backend
        fills them."""
        spools: dict[str, AudioSpool] = {}
        if self.audio_consumer is None or not self.backend.fills_audio_spools:
            return spools
        for task in tasks:
            path = str(task.info.path)
            if path not in spools:
                spool = self.audio_consumer.audio_spool_for(task)
                if spool is not None:
                    spools[path] = spool
        return spools

    def _file(self, task: Task) -> Path:
        return task.video.folder.stage_file(self.name, task.key, "json")

    def _save(self, task: Task, result: SpeechResult | Exception, seconds: float,
              reading: Mapping[str, float] | None = None) -> StageOutput:
        if isinstance(result, Exception):
            raise result
        saved = {"language": result.language, "language_probability": result.language_probability,
                 "words": [w.to_dict() for w in result.words]}
        path = self._file(task)
        atomic_write_json(path, saved)
        task.video.folder.remove_stale(self.name, path)
        return self._output(task, _parse(saved), cached=False, seconds=seconds, reading=reading)

    def _output(self, task: Task, saved: Mapping[str, Any], cached: bool,
                seconds: float, reading: Mapping[str, float] | None = None) -> StageOutput:
        return StageOutput(task.key, cached, meta=saved, facts=self.backend.facts(),
                           timing={"backend": self.backend.name, **self.load.timing(),
                                   "compute_s": seconds, **(reading or {})})

    def close(self) -> None:
        self.backend.unload()


def _read(path: Path) -> dict[str, Any] | None:
    """A saved transcription, or None when absent or not ours (damaged: recomputed)."""
    if not path.exists():
        return None
    data = read_json(path)
    try:
        return _parse(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        path.unlink(missing_ok=True)  # our own cache file, edited or damaged: transcribe again
        return None


def _parse(data: Mapping[str, Any]) -> dict[str, Any]:
    """The meta a ``speech`` output carries: the language and the words as ``Word``."""
    probability = data.get("language_probability")
    language = data.get("language")
    return {"language": None if language is None else str(language),
            "language_probability": None if probability is None else float(probability),
            "words": tuple(Word.from_dict(w) for w in data["words"])}


def _reading(reads: AudioReads, position: int, loaded_at: float) -> dict[str, float]:
    """A video's share of the pooled reader's work for its timing: ``audio_read_s``, and
    ``model_wait_s``, how long the stream's read audio waited for the model (0: the model
    was ready first)."""
    reading = {}
    if position in reads.seconds:
        reading["audio_read_s"] = reads.seconds[position]
    if reads.finished_at is not None and loaded_at:
        reading["model_wait_s"] = max(0.0, loaded_at - reads.finished_at)
    return reading


def _raise(exc: Exception, task: Task) -> StageOutput:
    raise exc


class TranscriptStage(Stage):
    """Each scene's transcript: the ``speech`` words whose midpoint falls in it."""

    name = "transcript"
    inputs = ("probe", "shots", "speech")
    field = "transcript"
    concurrent = True
    waves = True

    def identity(self) -> dict[str, Any]:
        return {"version": TRANSCRIPT_VERSION}

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        return each(self.name, tasks, self._one, ctx)

    def _one(self, task: Task) -> StageOutput:
        ckpt, todo = _resume(task, self.name)
        start = time.perf_counter()
        with ckpt:
            for line in transcript_lines(task.inputs["speech"].meta["words"], todo):
                ckpt.append(line)
            missing = [s.index for s in task.scenes if s.index not in ckpt.done]
            if missing:
                raise StageFailed(f"no transcript for scene(s) {missing[:5]}")
            _finish(task, self.name, ckpt)
        return StageOutput(task.key, not todo, lines=dict(ckpt.done),
                           timing={"compute_s": time.perf_counter() - start})


def transcript_lines(words: Sequence[Word], todo: list[Scene]) -> Iterator[dict[str, Any]]:
    transcripts = assign_words(words, todo)
    for scene in todo:
        yield {"index": scene.index, "transcript": transcripts[scene.index].to_dict()}
