"""``scenescribe bench``: the reference report's tables, measured, with the reference method beside.

First the job: one ``run`` over every video (Stage 1 and the first model's captions, as
``scenescribe run VIDEOS --vlm MODEL`` does), timed by one clock from the command's start to the
last record written (``job_wall_s``), with its per-stage split (each model load and each
stage's compute counted once). Then each VLM captions the cached records in each mode:
``scenescribe`` (batched across scenes; by default the scenes of all videos in one stream, as
``run`` does) and ``reference`` (one scene per ``generate`` call, video by video, as the
reference pipeline did; Phi-3.5-Vision also without its KV cache). Load time is measured apart;
a warm-up batch runs before timing; GPU clocks are synchronised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scenescribe import registry
from scenescribe.assemble import caption_model
from scenescribe.backend import resolve_device
from scenescribe.captions.base import Captioner, CaptionRequest
from scenescribe.cpu_load import CpuSampler
from scenescribe.exports import load_facts, load_records
from scenescribe.options import CaptionOptions, RunOptions, merge
from scenescribe.pipeline import run
from scenescribe.progress import NullProgress, Progress
from scenescribe.stage2 import ModelSpec, caption_request, make_captioner, model_specs

log = logging.getLogger("scenescribe.bench")

MODES = ("scenescribe", "reference")
# The reference ran Phi-3.5-Vision with its cache off because the cache crashed.
REFERENCE_NO_CACHE = frozenset({"phi-3.5-vision"})


@dataclass(frozen=True, slots=True)
class BenchOptions:
    models: tuple[str, ...] = ()
    modes: tuple[str, ...] = MODES
    baseline: str | None = None  # model others are compared with; default: the first
    max_scenes: int = 0  # captioned scenes per video (0: all); subsets are marked in the tables
    reference_max_scenes: int = 0  # the same for the (slow) reference mode; 0: as max_scenes
    warmup_scenes: int = 2
    reference_speech: bool = False  # also time speech transcribed scene by scene
    # scenescribe mode captions all videos as one stream, as ``run`` does with a folder; False
    # times each video alone (per-video rows, batches capped by each video's scene count).
    pool: bool = True
    job_captions: bool = True  # the timed job includes the first model's captions
    fresh: bool = False  # recompute every stage of the job (a cached stage makes it no full job)
    note: str = ""  # printed under the report's title (e.g. which Stage 1 weights were random)
    tag: str = ""  # appended to model names in rows, to tell settings apart in merged reports


def sync_device(device: str) -> None:
    """Wait for ``device``'s queued work (a no-op off CUDA), so a clock reads finished work."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return None


def alloc_retries(device: str) -> int | None:
    """How often torch's CUDA allocator has freed its cache and retried an allocation so far: a
    batch planned close to the memory's end pays a device-wide sync each time."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.memory_stats().get("num_alloc_retries", 0))
    return None


def _requests(folder: Path, limit: int, grounding: bool) -> tuple[list[CaptionRequest], int]:
    """The scenes' requests as ``run``'s caption stage builds them (grounding included)."""
    found = [q for r in load_records(folder) if (q := caption_request(r, folder, grounding))]
    return (found[:limit] if limit else found), len(found)


def _pooled_requests(folders: Sequence[Path], limit: int,
                     grounding: bool) -> tuple[list[CaptionRequest], int]:
    """Every video's requests in one stream (ids renumbered), as ``run`` captions a folder."""
    pooled: list[CaptionRequest] = []
    total = 0
    for folder in folders:
        reqs, scenes = _requests(folder, limit, grounding)
        pooled += [replace(r, index=len(pooled) + k) for k, r in enumerate(reqs)]
        total += scenes
    return pooled, total


def bench_run_options(base: RunOptions, *, models: Sequence[str] | None = None,
                      max_new_tokens: int | None = None, batch_size: int | None = None,
                      random_weights: bool | None = None, stages: tuple[str, ...] | None = None,
                      device: str | None = None, model_dir: str | None = None) -> RunOptions:
    """``base`` (a config file's options, or the defaults) with only the flags actually given
    (not None) applied: CLI > config > defaults. Random weights fix the output length."""
    captions = merge(base.captions, {
        "models": tuple(models) if models else None, "random_weights": random_weights,
        "max_new_tokens": max_new_tokens, "batch_size": batch_size}, "bench")
    if captions.random_weights:
        captions = replace(captions, min_new_tokens=captions.max_new_tokens)
    return merge(base, {"captions": captions, "device": device, "stages": stages,
                        "model_dir": model_dir}, "bench")


def caption_mode_options(base: CaptionOptions, model: str, mode: str) -> CaptionOptions:
    """The reference method: one scene per transformers ``generate`` call (never the static
    decoder, which ``auto`` takes on CUDA), Phi-3.5-Vision without its cache."""
    if mode == "reference":
        return replace(base, batch_size=1, use_cache=model not in REFERENCE_NO_CACHE,
                       decoder="generate")
    return base


def time_captioner(spec: ModelSpec, mode: str, folders: Sequence[Path], options: RunOptions,
                   bench: BenchOptions, progress: Progress) -> list[dict[str, Any]]:
    """Rows (one per video) for one model in one mode."""
    device = resolve_device(options.device)
    model_dir = Path(options.model_dir) if options.model_dir else registry.model_dir_from_env()
    copts = caption_mode_options(options.captions, spec.name, mode)
    captioner = make_captioner(spec, copts, device, model_dir)  # as run's caption stage does
    start = time.perf_counter()
    captioner.load()
    sync_device(device)
    load_s = time.perf_counter() - start
    rows = []
    try:
        # One scene warms a one-scene-per-call model as well as two; each costs a full caption.
        warm = min(bench.warmup_scenes, 1) if mode == "reference" else bench.warmup_scenes
        first, _ = _requests(folders[0], warm, copts.grounding)
        if first and warm:
            list(captioner.caption(first, NullProgress()))
        if mode == "scenescribe" and bench.pool and len(folders) > 1:
            groups: list[Sequence[Path]] = [folders]
        else:
            groups = [[folder] for folder in folders]
        for group in groups:
            label = f"{spec.name} [{bench.tag}]" if bench.tag else spec.name
            rows.append(_time_videos(captioner, label, mode, group, bench, device, load_s,
                                     copts, progress))
    finally:
        captioner.unload()
    return rows


def _time_videos(captioner: Captioner, model: str, mode: str, folders: Sequence[Path],
                 bench: BenchOptions, device: str, load_s: float, copts: CaptionOptions,
                 progress: Progress) -> dict[str, Any]:
    """One row: the scenes of ``folders`` captioned in one stream (one folder: one video)."""
    facts = [load_facts(folder) for folder in folders]
    duration = sum(float(f["video"]["duration"]) for f in facts)
    limit = bench.max_scenes
    if mode == "reference" and bench.reference_max_scenes:
        limit = bench.reference_max_scenes
    reqs, total = _pooled_requests(folders, limit, copts.grounding)
    video = folders[0].name if len(folders) == 1 else f"all {len(folders)} (pooled)"
    row: dict[str, Any] = {
        "model": model, "mode": mode, "video": video, "videos": len(folders),
        "duration_s": duration, "scenes": total, "scenes_timed": len(reqs), "load_s": load_s,
        "weights": "random" if copts.random_weights else "real", "status": "ok"}
    warm_up = getattr(captioner, "warm_up", None)
    if callable(warm_up):  # CUDA: a short generate at the first batch's shape, off the clock
        warm_up(reqs)
    _reset_peak(device)
    retries = alloc_retries(device)
    sync_device(device)
    start = time.perf_counter()
    captions = dict(captioner.caption(reqs, progress))
    sync_device(device)
    caption_s = time.perf_counter() - start
    tuner = getattr(captioner, "tuner", None)
    if tuner is not None:  # the batch the engine ran at, and what each trial size measured
        row["batch"] = tuner.chosen or tuner.sizes[0]
        row["batch_trials"] = {str(s): round(tuner.per_scene(s), 4) for s in tuner.timings}
    errors = [c.error for c in captions.values() if c.error]
    if errors:
        row["status"] = f"{len(errors)} scene(s) failed: {errors[0]}"
    # Frames were extracted once by the job's frames stage (its own line in the job split); the
    # VLM time is the captioner's: image loading and preprocessing, generation, decoding.
    per_scene = caption_s / max(len(reqs), 1)
    vlm_s = per_scene * total  # projected to every scene when a subset was timed
    row.update(caption_s=caption_s, s_per_scene=per_scene, vlm_s=vlm_s,
               rtf=vlm_s / duration, peak_gpu_gb=_peak_gb(device),
               new_tokens=sum(c.new_tokens for c in captions.values()))
    # Where the caption time went (the engine's waits for preparation against its model calls).
    row.update({k: round(v, 3) for k, v in (getattr(captioner, "engine_stats", None) or {}).items()})
    if retries is not None:
        row["alloc_retries"] = (alloc_retries(device) or 0) - retries
    return row


def bench(videos: Sequence[str | Path], out: str | Path, options: RunOptions | None = None,
          bench_options: BenchOptions | None = None, *,
          progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out``."""
    from scenescribe.bench_report import build_report, write_report

    options = options or RunOptions()
    bench_options = bench_options or BenchOptions(models=options.captions.models)
    progress = progress or NullProgress()
    specs = model_specs(bench_options.models)  # parsed once, before Stage 1 runs
    out = Path(out)
    job_models = bench_options.models[:1] if bench_options.job_captions else ()
    start = time.perf_counter()
    with CpuSampler() as cpu:  # are the cores what a waiting stage waits for?
        stage1 = run(videos, out / "runs", replace(options, captions=replace(
            options.captions, models=job_models)), progress=progress, force=bench_options.fresh)
    job_wall_s = time.perf_counter() - start  # one clock: first decode to last record written
    folders = [Path(v.out_dir) for v in stage1.videos if v.ok and v.out_dir]
    failed = [{"video": v.path, "error": v.error} for v in stage1.failed]
    reference_speech = (_reference_speech(folders, options, progress)
                        if bench_options.reference_speech else {})
    rows: list[dict[str, Any]] = []
    for spec in specs:
        for mode in bench_options.modes:
            try:
                rows.extend(time_captioner(spec, mode, folders, options, bench_options, progress))
            except Exception as exc:  # one model failing (OOM, missing weights) keeps the others
                log.warning("bench %s/%s failed: %s", spec.name, mode, exc)
                rows.append({"model": spec.name, "mode": mode, "video": "*",
                             "status": f"failed: {type(exc).__name__}: {exc}"})
    job = job_split([v.timings for v in stage1.videos if v.ok], job_wall_s,
                    specs[0].name if job_models else None,
                    {name: (a - start, b - start) for name, (a, b) in stage1.spans.items()},
                    {Path(v).name: {name: t - start for name, t in stages.items()}
                     for v, stages in stage1.finished.items()})
    job["executor"] = stage1.executor  # throughput is reported per GPU count
    job["cpu"] = cpu.report()
    if stage1.executor.get("name") == "local":  # every model ran here: this allocator's count
        job["alloc_retries"] = alloc_retries(resolve_device(options.device))
    report = build_report(folders, rows, bench_options, options, reference_speech, failed, job)
    write_report(report, out)
    return report


# Parts of a stage's compute some stages report per video (summed like ``compute_s``): the
# caption engine's waits for preprocessing and its model calls, the speech reader's seconds
# and the speech model's phases (``SpeechRecognizer.phase_seconds``; with the thread's CPU
# seconds and context switches in each, ``phases``).
SPEECH_PHASES = ("encode", "decode", "align", "dtw", "words")
SPLIT_DETAILS = ("prepare_wait_s", "generate_s", "audio_read_s",
                 *(f"{phase}{part}" for phase in SPEECH_PHASES
                   for part in ("_s", "_cpu_s", "_blocked", "_preempted")))


def job_split(timings: Sequence[dict[str, dict[str, Any]]], wall_s: float,
              model: str | None, spans: Mapping[str, tuple[float, float]] | None = None,
              finished: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """The job's wall clock beside its per-stage split, nothing counted twice.

    ``timings`` are each video's stage timings (``VideoResult.timings``). A stage's model loads
    once per run but every video reports that load, so a load counts once (the largest); compute
    is summed over videos (a caption stage already charges each video its share). Stages run
    side by side on GPU hosts (``scheduler.schedule``), so the sum of the split may exceed the wall
    clock; the difference is ``overlap_s``. A stage reused from cache makes the clock no full job.
    ``spans`` (seconds on the job's clock) place each stage in time: its row's ``from_s`` and
    ``to_s``, and ``stage1_wall_s``, when every stage but the captions was done; ``finished``
    (same clock) when each video's outcome of each stage came: ``videos_done_s``.
    """
    stages: dict[str, dict[str, Any]] = {}
    for video in timings:
        for name, t in video.items():
            row = stages.setdefault(name, {"stage": name, "load_s": 0.0, "compute_s": 0.0,
                                           "cached": True})
            row["load_s"] = max(row["load_s"], float(t.get("load_s", 0.0)))
            row["compute_s"] += float(t.get("compute_s", 0.0))
            row["cached"] = row["cached"] and bool(t.get("cached", False))
            for key in SPLIT_DETAILS:  # where a stage's compute went, where it says
                if key in t:
                    row[key] = row.get(key, 0.0) + float(t[key])
    split = list(stages.values())
    spans = spans or {}
    for row in split:
        if row["stage"] in spans:
            row["from_s"], row["to_s"] = spans[row["stage"]]
    stage1 = [b for name, (_, b) in spans.items() if caption_model(name) is None]
    summed = sum(r["load_s"] + r["compute_s"] for r in split)
    return {"wall_s": wall_s, "model": model, "videos": len(timings), "stages": split,
            "load_s": sum(r["load_s"] for r in split),
            "compute_s": sum(r["compute_s"] for r in split), "split_sum_s": summed,
            "overlap_s": summed - wall_s, "cached": [r["stage"] for r in split if r["cached"]],
            "stage1_wall_s": max(stage1) if stage1 else None,
            "videos_done_s": {v: dict(sorted(done.items(), key=lambda kv: kv[1]))
                              for v, done in sorted((finished or {}).items())}}


def _reference_speech(folders: Sequence[Path], options: RunOptions,
                      progress: Progress) -> dict[str, float]:
    """Seconds to transcribe each video scene by scene (the reference's per-scene calls)."""
    import tempfile

    from scenescribe.media import decode_audio, probe
    from scenescribe.pipeline import create_backend
    from scenescribe.speech.base import SpeechRecognizer
    from scenescribe.store import atomic_write_bytes
    from scenescribe.wav import wav_bytes

    device = resolve_device(options.device)
    model_dir = Path(options.model_dir) if options.model_dir else registry.model_dir_from_env()
    recognizer = create_backend("speech", options.speech, device, model_dir)
    assert isinstance(recognizer, SpeechRecognizer)
    recognizer.load()
    seconds = {}
    try:
        for folder in folders:
            facts = load_facts(folder)
            source = facts["video"]["path"]
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                for record in load_records(folder):
                    audio = decode_audio(source, start=record.scene.start, end=record.scene.end)
                    if len(audio) < 1600:
                        continue
                    clip = Path(tmp) / f"scene{record.index}.wav"
                    atomic_write_bytes(clip, wav_bytes(audio))
                    recognizer.transcribe(probe(clip), NullProgress())
            seconds[folder.name] = time.perf_counter() - start
    finally:
        recognizer.unload()
    return seconds
