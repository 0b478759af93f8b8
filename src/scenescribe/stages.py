"""Stage runners. Each reads a job's scenes, computes what its checkpoint lacks and records time.

Model lifetimes are stage-major: a backend is loaded once, run over every video, then freed.
A failure on one video marks that video failed; the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from scenescribe.errors import ScenescribeError
from scenescribe.options import RunOptions, to_dict
from scenescribe.progress import PrefixedProgress, Progress
from scenescribe.records import Scene
from scenescribe.sampling import sample_and_track, sample_scene_frames
from scenescribe.shots import cuts_to_scenes
from scenescribe.store import atomic_write_json, fingerprint_file, remove_stale
from scenescribe.workspace import VideoJob

log = logging.getLogger("scenescribe.stages")


@contextmanager
def guarded(job: VideoJob, stage: str) -> Iterator[None]:
    """Turn a failure inside one video's stage into that video's error, and go on."""
    try:
        yield
    except ScenescribeError as exc:
        log.info("%s: %s failed: %s", job.source, stage, exc)  # the run summary reports it
        job.fail(f"{stage}: {exc}" if str(job.source) in str(exc) else f"{job.source}: {stage}: {exc}")
    except Exception as exc:  # a backend bug must not lose the other videos' work
        log.exception("%s: %s failed", job.source, stage)
        job.fail(f"{job.source}: {stage}: internal error: {type(exc).__name__}: {exc}")


def timed_load(backend: Any) -> float:
    start = time.perf_counter()
    backend.load()
    return time.perf_counter() - start


class LazyLoad:
    """Loads a backend the first time a video needs it: a fully cached rerun loads nothing."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.seconds = 0.0

    def __call__(self) -> None:
        if not self.backend.loaded:
            self.seconds = timed_load(self.backend)


def run_shots(jobs: Sequence[VideoJob], detector: Any, progress: Progress) -> None:
    """Detect shots per video, or reuse the cached scenes for the same content and options."""
    load = LazyLoad(detector)
    for job in jobs:
        if not job.ok or job.info is None:
            continue
        with guarded(job, "shots"):
            job.fingerprint = job.fingerprint or fingerprint_file(job.source)
            job.shots_key = job.key(job.fingerprint, detector.cache_key())
            path = job.work_dir / f"shots-{job.shots_key}.json"
            cached = path.exists()
            if not cached and job.info.has_video:
                load()  # before the clock: load time is reported apart
            start = time.perf_counter()
            if cached:
                job.scenes = [Scene.from_dict(s) for s in json.loads(path.read_text())["scenes"]]
            else:
                cuts = (detector.detect(job.info, PrefixedProgress(progress, job.source.name))
                        if job.info.has_video else [])
                job.scenes = cuts_to_scenes(job.info, cuts, detector.options)
                atomic_write_json(path, {"scenes": [s.to_dict() for s in job.scenes]})
                remove_stale(job.work_dir, "shots", path)
            job.record_timing("shots", backend=detector.name, load_s=load.seconds, cached=cached,
                              compute_s=time.perf_counter() - start)


def run_frames(jobs: Sequence[VideoJob], options: RunOptions, progress: Progress) -> None:
    for job in jobs:
        if not job.ok or job.info is None:
            continue
        with guarded(job, "frames"):
            job.frames_key = job.key(job.shots_key, to_dict(options.frames))
            with job.checkpoint("frames", job.frames_key) as ckpt:
                todo = [s for s in job.scenes if s.index not in ckpt.done]
                start = time.perf_counter()
                for index, refs in sample_scene_frames(job.info, todo, options.frames, job.out_dir,
                                                       PrefixedProgress(progress, job.source.name)):
                    ckpt.append({"index": index, "frames": [r.to_dict() for r in refs]})
                if not ckpt.complete:
                    ckpt.finish()
                    remove_stale(job.work_dir, "frames", ckpt.final)
            job.record_timing("frames", load_s=0.0, cached=not todo,
                              compute_s=time.perf_counter() - start)


def run_frames_and_objects(jobs: Sequence[VideoJob], options: RunOptions, tracker: Any,
                           progress: Progress) -> None:
    """The frames and objects stages from one decode pass per video (decode once).

    Each keeps its own key and checkpoint, so either may be cached while the other runs. The
    frames' time runs until their JPEGs are written, the objects' until the tracker is done.
    """
    load = LazyLoad(tracker)
    try:
        for job in jobs:
            if not job.ok or job.info is None:
                continue
            with guarded(job, "frames/objects"):
                job.frames_key = job.key(job.shots_key, to_dict(options.frames))
                objects_key = job.key(job.shots_key, tracker.cache_key())
                with job.checkpoint("frames", job.frames_key) as frames, \
                        job.checkpoint("objects", objects_key) as objects:
                    frame_todo = [s for s in job.scenes if s.index not in frames.done]
                    object_todo = [s for s in job.scenes if s.index not in objects.done]
                    if object_todo and job.info.has_video:
                        load()  # before the clock: load time is reported apart
                    frames_s, elapsed = sample_and_track(
                        job.info, frame_todo, options.frames, job.out_dir, tracker, object_todo,
                        PrefixedProgress(progress, job.source.name),
                        on_frames=lambda i, refs, c=frames: c.append(
                            {"index": i, "frames": [r.to_dict() for r in refs]}),
                        on_objects=lambda i, objs, c=objects: c.append(
                            {"index": i, "objects": [o.to_dict() for o in objs]}))
                    for stage, ckpt in (("frames", frames), ("objects", objects)):
                        if not ckpt.complete:
                            ckpt.finish()
                            remove_stale(job.work_dir, stage, ckpt.final)
                job.models["objects"] = tracker.facts()
                job.record_timing("frames", load_s=0.0, cached=not frame_todo, compute_s=frames_s)
                job.record_timing("objects", backend=tracker.name, load_s=load.seconds,
                                  cached=not object_todo, compute_s=elapsed)
    finally:
        tracker.unload()


Producer = Callable[[Any, VideoJob, list[Scene], Progress], Iterator[dict[str, Any]]]


def run_component(stage: str, backend: Any, jobs: Sequence[VideoJob], produce: Producer,
                  progress: Progress) -> None:
    """Run one Stage 1 component over every video, resuming from its checkpoint."""
    load = LazyLoad(backend)
    for job in jobs:
        if not job.ok or job.info is None:
            continue
        with guarded(job, stage):
            key = job.key(job.shots_key, backend.cache_key())
            with job.checkpoint(stage, key) as ckpt:
                todo = [s for s in job.scenes if s.index not in ckpt.done]
                if todo:
                    load()  # before the clock: load time is reported apart
                start = time.perf_counter()
                if todo:
                    named = PrefixedProgress(progress, job.source.name)
                    for line in produce(backend, job, todo, named):
                        ckpt.append(line)
                if not ckpt.complete:
                    ckpt.finish()
                    remove_stale(job.work_dir, stage, ckpt.final)
            job.models[stage] = backend.facts()
            job.record_timing(stage, backend=backend.name, load_s=load.seconds, cached=not todo,
                              compute_s=time.perf_counter() - start)


def produce_speech(backend: Any, job: VideoJob, todo: list[Scene],
                   progress: Progress) -> Iterator[dict[str, Any]]:
    from scenescribe.speech.join import assign_words

    assert job.info is not None
    result = backend.transcribe(job.info, progress)
    yield {"index": -1, "language": result.language,
           "language_probability": result.language_probability}
    transcripts = assign_words(result.words, todo)
    for scene in todo:
        yield {"index": scene.index, "transcript": transcripts[scene.index].to_dict()}


def produce_sounds(backend: Any, job: VideoJob, todo: list[Scene],
                   progress: Progress) -> Iterator[dict[str, Any]]:
    assert job.info is not None
    for index, tags in backend.tag_scenes(job.info, todo, progress):
        yield {"index": index, "sounds": [t.to_dict() for t in tags]}


def produce_objects(backend: Any, job: VideoJob, todo: list[Scene],
                    progress: Progress) -> Iterator[dict[str, Any]]:
    assert job.info is not None
    for index, objects in backend.track_scenes(job.info, todo, progress):
        yield {"index": index, "objects": [o.to_dict() for o in objects]}


PRODUCERS: dict[str, Producer] = {
    "speech": produce_speech,
    "sounds": produce_sounds,
    "objects": produce_objects,
}
