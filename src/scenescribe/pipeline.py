"""The library entry points: ``run`` (the whole pipeline) and ``detect_scenes`` (shots only).

``run`` claims each video's output folder (lock, what it created), plans the stage graph::

    probe -> shots -> frames ---------------------------------> captions[model] (one per model)
          |        -> transcript, sounds, objects -(grounding)-/
          -> speech (whole-file words, beside shots) -/
          -> detections (boxes at every tick, beside shots) -/

runs it, writes each video's files and cleans up only what it created for failed inputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scenescribe import locks, registry
from scenescribe.assemble import caption_model, stage_status, write_outputs
from scenescribe.backend import Backend, resolve_device
from scenescribe.component_stages import COMPONENTS, ComponentStage
from scenescribe.errors import InputError, ScenescribeError
from scenescribe.executors import open_executor
from scenescribe.graph import (
    Graph,
    Node,
    Outcome,
    Results,
    RunContext,
    Stage,
    StageOutput,
    Video,
    failure,
)
from scenescribe.media import probe
from scenescribe.media.audio_spool import discard_audio_spools
from scenescribe.objects.base import ObjectTracker
from scenescribe.objects_stages import DetectionsStage
from scenescribe.options import RunOptions, ShotOptions, check_output_folder, validate
from scenescribe.progress import NullProgress, Progress
from scenescribe.records import Scene
from scenescribe.shots import cuts_to_scenes
from scenescribe.shots.base import ShotDetector
from scenescribe.sounds.base import SoundTagger
from scenescribe.sounds_stages import SoundsStage
from scenescribe.speech.base import SpeechRecognizer
from scenescribe.speech_stages import SpeechStage, TranscriptStage
from scenescribe.stage2 import GROUNDING_INPUTS, CaptionStage, ModelSpec, make_captioner, model_specs
from scenescribe.stages import FramesStage, ProbeStage, ShotsStage
from scenescribe.workspace import WORK_DIR, WorkFolder, output_folders

log = logging.getLogger("scenescribe.pipeline")

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus"})

# Backends picked when an option says "auto": the embedded CPU defaults, or the GPU defaults.
AUTO_BACKENDS = {
    "shots": {"cpu": "hsvcut", "cuda": "transnetv2-hsvcut"},
    "speech": {"cpu": "faster-whisper-tiny.en", "cuda": "whisper-large-v3"},
    "sounds": {"cpu": "yamnet", "cuda": "ast-audioset"},
}


@dataclass
class VideoResult:
    """What ``run`` did with one input. ``stages`` says, per stage, computed or cached."""

    path: str
    out_dir: str | None
    ok: bool
    error: str | None = None
    scenes: int = 0
    duration: float = 0.0
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """Every input's result, the run's warnings, and when each stage ran: ``spans`` maps a
    stage to its start and end in seconds on the ``time.perf_counter`` clock, ``finished`` each
    video (its source) to when each stage's outcome for it came (where the executor reports
    outcomes per video: a local run)."""

    videos: list[VideoResult]
    warnings: list[str]
    executor: dict[str, Any] = field(default_factory=dict)  # name, and GPUs it could place on
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    finished: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def failed(self) -> list[VideoResult]:
        return [v for v in self.videos if not v.ok]


def collect_videos(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the media files they hold (sorted); files pass through as given."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                                and WORK_DIR not in p.parts))
        else:
            found.append(path)
    return found


def backend_name(stage: str, name: str, device: str) -> str:
    if name != "auto":
        return name
    return AUTO_BACKENDS[stage]["cuda" if device.startswith("cuda") else "cpu"]


def create_backend(stage: str, options: Any, device: str, model_dir: Path | None) -> Backend:
    """The Stage 1 backend named by ``options.backend`` (``auto`` resolved for ``device``)."""
    name = backend_name(stage, options.backend, device)
    backend = registry.create(name, stage, options=replace(options, backend=name), device=device,  # type: ignore[arg-type]
                              model_dir=model_dir)
    assert isinstance(backend, Backend)
    return backend


def run(
    videos: Sequence[str | Path] | str | Path,
    out: str | Path,
    options: RunOptions | None = None,
    *,
    progress: Progress | None = None,
    force: bool = False,
) -> RunResult:
    """Process videos (files or folders) into ``out/<stem>/scenes.jsonl`` and ``run.json``.

    Finished work is reused: a rerun, or a run after a crash, computes only what is missing.
    ``force`` discards cached results first. A bad file fails alone; the others go on.
    """
    options = options or RunOptions()
    validate(options)
    check_output_folder(out)
    inputs = [videos] if isinstance(videos, (str, Path)) else list(videos)
    sources = collect_videos(inputs)
    if not sources:
        raise InputError(", ".join(map(str, inputs)) or "(no input)", "no media files found")
    model_dir = Path(options.model_dir).expanduser() if options.model_dir else (
        registry.model_dir_from_env())
    specs = model_specs(options.captions.models)  # parsed once; unknown names fail here
    with open_executor(options.executor, options.address) as executor:
        device = executor.device(options.device)  # where the models run (Ray: the cluster)
        backends = _preflight(options, device, model_dir)
        folders = output_folders(sources, Path(out))
        jobs = [Video(src, WorkFolder(folder))
                for src, folder in zip(sources, folders, strict=True)]
        ctx = RunContext(progress or NullProgress())
        with claimed(jobs, force):
            graph = plan(options, backends, specs, device, model_dir, ctx)
            try:
                results = executor.run_graph(graph, jobs, ctx, _side_by_side(options, device))
            finally:  # audio the sound tagger did not read (cached, failed, stopped); the spools'
                for job in jobs:  # folder once empty
                    discard_audio_spools(job.folder.work)
            done = _finish(jobs, results, options, ctx)
            done.executor = {"name": executor.name, "gpus": executor.gpus()}
            done.spans = dict(ctx.spans)
            done.finished = {v: dict(stages) for v, stages in ctx.finished.items()}
            return done


def _preflight(options: RunOptions, device: str, model_dir: Path | None) -> dict[str, Backend]:
    """Create every Stage 1 backend up front so a missing package or weights fails before work."""
    backends = {"shots": create_backend("shots", options.shots, device, model_dir)}
    for stage in options.stages:
        backend = create_backend(stage, getattr(options, stage), device, model_dir)
        if backend.entry.local_paths or backend.entry.checkpoint:
            backend.weights()  # resolves now: ModelNotFoundError names every place searched
        backends[stage] = backend
    return backends


def plan(options: RunOptions, backends: dict[str, Backend], specs: Sequence[ModelSpec],
         device: str, model_dir: Path | None, ctx: RunContext) -> Graph:
    """The run's stage graph: Stage 1, then one caption stage per model."""
    detector = backends["shots"]
    assert isinstance(detector, ShotDetector)
    frames = FramesStage(options.frames)
    shots = ShotsStage(detector)
    stages: list[Node] = [ProbeStage(), shots]
    components: list[Stage] = []
    speech: SpeechStage | None = None
    for name in options.stages:
        backend = backends[name]
        if name == "speech":  # the model beside shots; the join onto scenes after them
            assert isinstance(backend, SpeechRecognizer)
            speech = SpeechStage(backend)
            stages.append(speech)
            components.append(TranscriptStage())
            continue
        if name == "sounds":  # its audio from the speech stage's reading, where there is one
            assert isinstance(backend, SoundTagger)
            components.append(SoundsStage(backend))
            continue
        if name == "objects":  # the detector after shots, on frames of their decode; tracking
            assert isinstance(backend, ObjectTracker)  # within scenes after both
            detections = DetectionsStage(backend)
            shots.spool_consumer = detections
            stages.append(detections)
        components.append(ComponentStage(name, backend))
    if speech is not None:
        speech.audio_consumer = next((c for c in components if isinstance(c, SoundsStage)), None)
    grounded = ([COMPONENTS[n].lines_stage(n) for n in options.stages if n in GROUNDING_INPUTS]
                if options.captions.grounding else [])
    for component in components:
        if (specs and isinstance(component, ComponentStage) and component.name != "objects"
                and component.name not in grounded):
            # Frames first: the captioners wait for the JPEGs, so a component no captioner
            # reads (the sound tagger's audio features) starts once they are saved, not
            # beside them on the same cores. Tracking needs no cores worth waiting for.
            component.after = (frames.name,)
    stages += [frames, *components]
    for spec in specs:
        try:
            captioner = make_captioner(spec, options.captions, device, model_dir)
        except ScenescribeError as exc:
            ctx.warn(f"captioner {spec.name} cannot run: {exc}")
            continue
        stages.append(CaptionStage(spec, captioner, grounded))
    return Graph(stages)


@contextlib.contextmanager
def claimed(jobs: Sequence[Video], force: bool) -> Iterator[None]:
    """Make and lock every output folder first: a second run on the same folders stops before
    any work. Locks are released whatever happens; an interrupted run keeps its checkpoints."""
    held: list[Video] = []
    try:
        for job in jobs:
            _claim(job)
            held.append(job)
            if force:
                job.folder.discard_work()
    except BaseException:
        for job in held:
            locks.release(job.folder.lock_file)
            job.folder.remove_created()
        raise
    try:
        yield
    finally:
        for job in held:
            locks.release(job.folder.lock_file)


def _claim(job: Video) -> None:
    try:
        job.folder.make()
    except OSError as exc:
        raise InputError(job.folder.root,
                         f"cannot create the output folder: {exc.strerror or exc}") from None
    try:
        locks.acquire(job.folder.lock_file)
    except (ScenescribeError, OSError) as exc:
        job.folder.remove_created()
        if isinstance(exc, OSError):
            raise InputError(job.folder.root, f"cannot write its lock file: "
                                              f"{exc.strerror or exc}") from None
        raise
    job.folder.clean_temp()


def _side_by_side(options: RunOptions, device: str) -> bool:
    """Run Stage 1 components concurrently unless they would only fight over a few cores."""
    if options.parallel is not None:
        return options.parallel
    return device.startswith("cuda") and (os.cpu_count() or 1) >= 4


def _finish(jobs: Sequence[Video], results: Results, options: RunOptions,
            ctx: RunContext) -> RunResult:
    """Write each video's files, or clean up what this run created for a failed one."""
    videos = []
    for job, outputs in zip(jobs, results, strict=True):
        failed = failure(outputs)
        error = failed.reason if failed else None
        written = False
        if error is None:
            try:
                write_outputs(job, outputs, options)
                written = True
            except (OSError, ScenescribeError) as exc:
                error = f"{job.source}: write: {exc}"
        if written:
            error = _caption_problems(job, outputs, ctx)
        else:
            locks.release(job.folder.lock_file)
            job.folder.remove_created()
        videos.append(_result(job, outputs, error, written))
    return RunResult(videos, ctx.warnings)


def _caption_problems(job: Video, outputs: dict[str, Outcome], ctx: RunContext) -> str | None:
    """A model whose every caption failed fails the video (its Stage 1 records are written);
    some failed scenes are a warning. Either way one line names the model and the reason."""
    error = None
    for stage, out in outputs.items():
        model = caption_model(stage)
        if model is None or not isinstance(out, StageOutput) or not out.errors:
            continue
        first = next(iter(out.errors.values()))
        if not out.lines:
            error = error or (f"{job.source}: captions by {model}: all {len(out.errors)} "
                              f"failed: {first}")
        else:
            ctx.warn(f"{job.source}: captions by {model}: {len(out.errors)} of "
                     f"{len(out.errors) + len(out.lines)} scene(s) failed (retried next run): "
                     f"{first}")
    return error


def _result(job: Video, outputs: dict[str, Outcome], error: str | None,
            written: bool) -> VideoResult:
    probed = outputs.get("probe")
    shots = outputs.get("shots")
    timings = {name: {**out.timing, "cached": out.cached} for name, out in outputs.items()
               if isinstance(out, StageOutput) and name != "probe"}
    return VideoResult(
        str(job.source), str(job.folder.root) if written else None, error is None, error,
        len(shots.lines) if isinstance(shots, StageOutput) else 0,
        probed.meta["info"].duration if isinstance(probed, StageOutput) else 0.0,
        timings, {name: stage_status(out) for name, out in outputs.items()})


def detect_scenes(video: str | Path, options: ShotOptions | None = None, *, device: str = "cpu",
                  progress: Progress | None = None) -> list[Scene]:
    """Shots of one video as scenes, computed without writing anything."""
    options = options or ShotOptions()
    info = probe(video)
    detector = create_backend("shots", options, resolve_device(device), None)
    assert isinstance(detector, ShotDetector)
    with detector:
        cuts = detector.detect(info, progress or NullProgress()) if info.has_video else []
    return cuts_to_scenes(info, cuts, options)
