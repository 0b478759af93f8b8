"""``scenescribe bench``: the reference report's tables, measured, with the reference method beside.

Stage 1 runs once per video through the normal pipeline; then each VLM captions the cached
records in each mode: ``scenescribe`` (batched across scenes; by default the scenes of all videos
in one stream, as ``run`` does) and ``reference`` (one scene per ``generate`` call, video by
video, as the reference pipeline did; Phi-3.5-Vision also without its KV cache).
Load time is measured apart; a warm-up batch runs before timing; GPU clocks are synchronised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scenescribe import registry
from scenescribe.backend import resolve_device
from scenescribe.captions.base import Captioner, CaptionRequest
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
    note: str = ""  # printed under the report's title (e.g. which Stage 1 weights were random)
    tag: str = ""  # appended to model names in rows, to tell settings apart in merged reports


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
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
    if mode == "reference":
        return replace(base, batch_size=1, use_cache=model not in REFERENCE_NO_CACHE)
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
    _sync(device)
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
    frames_s = sum(float(f["timings"].get("frames", {}).get("compute_s", 0.0)) for f in facts)
    video = folders[0].name if len(folders) == 1 else f"all {len(folders)} (pooled)"
    row: dict[str, Any] = {
        "model": model, "mode": mode, "video": video, "videos": len(folders),
        "duration_s": duration, "scenes": total, "scenes_timed": len(reqs), "load_s": load_s,
        "weights": "random" if copts.random_weights else "real", "status": "ok"}
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    captions = dict(captioner.caption(reqs, progress))
    _sync(device)
    caption_s = time.perf_counter() - start
    errors = [c.error for c in captions.values() if c.error]
    if errors:
        row["status"] = f"{len(errors)} scene(s) failed: {errors[0]}"
    per_scene = (caption_s + frames_s * len(reqs) / max(total, 1)) / max(len(reqs), 1)
    vlm_s = per_scene * total  # projected to every scene when a subset was timed
    row.update(caption_s=caption_s, frames_s=frames_s, s_per_scene=per_scene, vlm_s=vlm_s,
               rtf=vlm_s / duration, peak_gpu_gb=_peak_gb(device),
               new_tokens=sum(c.new_tokens for c in captions.values()))
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
    start = time.perf_counter()
    stage1 = run(videos, out / "runs", replace(options, captions=replace(options.captions,
                                                                          models=())),
                 progress=progress)
    stage1_wall_s = time.perf_counter() - start  # loads included; components may overlap
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
    report = build_report(folders, rows, bench_options, options, reference_speech, failed,
                          stage1_wall_s)
    write_report(report, out)
    return report


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
