"""The library entry points: ``run`` (the whole pipeline) and ``detect_scenes`` (shots only)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scenescribe import registry
from scenescribe.assemble import write_outputs
from scenescribe.backend import resolve_device
from scenescribe.errors import InputError, ScenescribeError
from scenescribe.media import probe
from scenescribe.options import RunOptions, ShotOptions, validate
from scenescribe.progress import NullProgress, Progress
from scenescribe.records import Scene
from scenescribe.shots import cuts_to_scenes
from scenescribe.stages import PRODUCERS, guarded, run_component, run_frames, run_shots, timed_load
from scenescribe.workspace import WORK_DIR, VideoJob, output_folders

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
    """What ``run`` did with one input."""

    path: str
    out_dir: str | None
    ok: bool
    error: str | None = None
    scenes: int = 0
    duration: float = 0.0
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunResult:
    videos: list[VideoResult]
    warnings: list[str]

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


def create_backend(stage: str, options: Any, device: str, model_dir: Path | None) -> Any:
    kind = "captioner" if stage == "captions" else stage
    name = backend_name(stage, options.backend, device)
    return registry.create(name, kind, options=replace(options, backend=name), device=device,
                           model_dir=model_dir)


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
    progress = progress or NullProgress()
    inputs = [videos] if isinstance(videos, (str, Path)) else list(videos)
    sources = collect_videos(inputs)
    if not sources:
        raise InputError(", ".join(map(str, inputs)) or "(no input)", "no media files found")
    device = resolve_device(options.device)
    model_dir = Path(options.model_dir).expanduser() if options.model_dir else (
        registry.model_dir_from_env())
    backends = _preflight(options, device, model_dir)
    jobs = [VideoJob(src, folder) for src, folder in zip(sources, output_folders(sources, Path(out)),
                                                         strict=True)]
    for job in jobs:
        with guarded(job, "probe"):
            job.info = probe(job.source)
            job.clean_temp()
            if force and job.work_dir.exists():
                shutil.rmtree(job.work_dir)
    _run_stages(jobs, backends, options, progress)
    warnings = (_run_captions(jobs, options, device, model_dir, progress)
                if options.captions.models else [])
    for job in jobs:
        if job.ok:
            with guarded(job, "write"):
                write_outputs(job, options)
        elif job.out_dir.exists() and not (job.out_dir / WORK_DIR).exists():
            shutil.rmtree(job.out_dir, ignore_errors=True)
    return RunResult([_result(job) for job in jobs], warnings)


def _preflight(options: RunOptions, device: str, model_dir: Path | None) -> dict[str, Any]:
    """Create every Stage 1 backend up front so a missing package or weights fails before work."""
    backends = {"shots": create_backend("shots", options.shots, device, model_dir)}
    for stage in options.stages:
        backend = create_backend(stage, getattr(options, stage), device, model_dir)
        if backend.entry.local_paths or backend.entry.checkpoint:
            backend.weights()  # resolves now: ModelNotFoundError names every place searched
        backends[stage] = backend
    return backends


def _run_stages(jobs: list[VideoJob], backends: dict[str, Any], options: RunOptions,
                progress: Progress) -> None:
    """Stage 1: shots, then frames and each component (side by side on GPU hosts)."""
    detector = backends["shots"]
    run_shots(jobs, detector, progress)
    detector.unload()
    tasks = [functools.partial(run_frames, jobs, options, progress)]
    tasks += [functools.partial(_run_one_component, stage, backends[stage], jobs, progress)
              for stage in options.stages]
    if _side_by_side(options):
        # GPU ASR, GPU/CPU tagging, detection and JPEG writing overlap: each waits on a
        # different resource, and the small Stage 1 models fit on one GPU together.
        with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="stage1") as pool:
            for future in [pool.submit(task) for task in tasks]:
                future.result()
    else:
        for task in tasks:
            task()


def _side_by_side(options: RunOptions) -> bool:
    """Run Stage 1 components concurrently unless they would only fight over a few cores."""
    if options.parallel is not None:
        return options.parallel
    return resolve_device(options.device).startswith("cuda") and (os.cpu_count() or 1) >= 4


def _run_one_component(stage: str, backend: Any, jobs: list[VideoJob], progress: Progress) -> None:
    if not any(j.ok for j in jobs):
        return
    try:
        run_component(stage, backend, jobs, PRODUCERS[stage], progress)
    finally:
        backend.unload()


def _run_captions(jobs: list[VideoJob], options: RunOptions, device: str, model_dir: Path | None,
                  progress: Progress) -> list[str]:
    """Each named VLM in turn; one that cannot load is reported and the run goes on."""
    from scenescribe.stage2 import run_captioner

    warnings = []
    for spec in options.captions.models:
        if not any(j.ok for j in jobs):
            break
        model, _, weights = spec.partition("=")
        try:
            captioner = registry.create(model, "captioner",
                                        options=replace(options.captions, weights=weights or None),
                                        device=device, model_dir=model_dir)
            load_s = timed_load(captioner)
        except ScenescribeError as exc:
            warnings.append(f"captioner {model} cannot run: {exc}")
            log.warning("captioner %s cannot run: %s", model, exc)
            continue
        try:
            run_captioner(captioner, load_s, jobs, options.captions.grounding, progress)
        finally:
            captioner.unload()
    return warnings


def _result(job: VideoJob) -> VideoResult:
    return VideoResult(str(job.source), str(job.out_dir) if job.ok else None, job.ok, job.error,
                       len(job.scenes), job.info.duration if job.info else 0.0, job.timings)


def detect_scenes(video: str | Path, options: ShotOptions | None = None, *, device: str = "cpu",
                  progress: Progress | None = None) -> list[Scene]:
    """Shots of one video as scenes, computed without writing anything."""
    options = options or ShotOptions()
    info = probe(video)
    detector = create_backend("shots", options, resolve_device(device), None)
    with detector:
        cuts = detector.detect(info, progress or NullProgress()) if info.has_video else []
    return cuts_to_scenes(info, cuts, options)
