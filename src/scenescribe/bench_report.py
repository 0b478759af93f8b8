"""Benchmark tables: per model and video, per model summary, Stage 1 breakdown, the whole job."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scenescribe.assemble import versions
from scenescribe.exports import load_facts
from scenescribe.options import RunOptions, to_dict
from scenescribe.store import atomic_open, atomic_write_json

STAGE1 = ("shots", "speech", "sounds", "detections", "objects")


def system_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                            "versions": versions()}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                        gpus=torch.cuda.device_count(), cuda=torch.version.cuda)
    except ImportError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if smi.returncode == 0:
            info["driver"] = smi.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def stage1_rows(folders: Sequence[Path], reference_speech: dict[str, float]) -> list[dict]:
    rows = []
    for folder in folders:
        facts = load_facts(folder)
        duration = float(facts["video"]["duration"])
        timings = facts["timings"]
        row: dict[str, Any] = {"video": folder.name, "duration_s": duration,
                               "scenes": facts["scenes"]}
        for stage in (*STAGE1, "frames"):
            t = timings.get(stage, {})
            row[f"{stage}_s"] = float(t.get("compute_s", 0.0))
            row[f"{stage}_load_s"] = float(t.get("load_s", 0.0))
            for key in (k for k in t if k.startswith(("load_imports_", "load_device_"))):
                row[f"{stage}_{key}"] = float(t[key])  # the load's imports and device start-up
        for wait in ("decode_wait_s", "write_wait_s"):  # where the frames' thread waited
            if wait in timings.get("frames", {}):
                row[f"frames_{wait}"] = float(timings["frames"][wait])
        for key in ("audio_read_s", "model_wait_s"):  # the pooled speech stream's reader
            if key in timings.get("speech", {}):
                row[f"speech_{key}"] = float(timings["speech"][key])
        if "spooled" in timings.get("detections", {}):  # frames from the shots' decode
            row["detections_spooled"] = bool(timings["detections"]["spooled"])
        row["stage1_s"] = sum(row[f"{s}_s"] for s in STAGE1)
        row["stage1_rtf"] = row["stage1_s"] / duration
        if folder.name in reference_speech:
            row["reference_speech_s"] = reference_speech[folder.name]
        rows.append(row)
    return rows


def summarize(rows: Sequence[dict[str, Any]], baseline: str | None) -> list[dict[str, Any]]:
    """Per (model, mode): totals over its videos, the per-row RTF range, relative speeds.

    ``s_per_scene`` and ``rtf`` are totals (VLM seconds over all scenes and over all video), so
    a pooled row and per-video rows compare; ``mean_rtf``/``min_rtf``/``max_rtf`` are over rows.
    """
    ok = [r for r in rows if r.get("status") == "ok" and "rtf" in r]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in ok:
        groups.setdefault((r["model"], r["mode"]), []).append(r)
    out = []
    for (model, mode), rs in groups.items():
        vlm_s = sum(r["vlm_s"] for r in rs)
        out.append({"model": model, "mode": mode, "videos": sum(r.get("videos", 1) for r in rs),
                    "scenes": sum(r["scenes"] for r in rs),
                    "scenes_timed": sum(r["scenes_timed"] for r in rs), "vlm_s": vlm_s,
                    "s_per_scene": vlm_s / sum(r["scenes"] for r in rs),
                    "rtf": vlm_s / sum(r["duration_s"] for r in rs),
                    "mean_rtf": statistics.fmean(r["rtf"] for r in rs),
                    "min_rtf": min(r["rtf"] for r in rs), "max_rtf": max(r["rtf"] for r in rs),
                    "weights": rs[0]["weights"],
                    "subset": any(r["scenes_timed"] < r["scenes"] for r in rs)})
    for mode in {s["mode"] for s in out}:
        same = [s for s in out if s["mode"] == mode]
        base = next((s for s in same if s["model"] == baseline), same[0] if same else None)
        for s in same:
            s["relative_speed"] = base["s_per_scene"] / s["s_per_scene"] if base else None
    by_key = {(s["model"], s["mode"]): s for s in out}
    for s in out:
        ref = by_key.get((s["model"], "reference"))
        if s["mode"] == "scenescribe" and ref:
            s["speedup_vs_reference"] = ref["s_per_scene"] / s["s_per_scene"]
    return out


def job_summary(job: dict[str, Any] | None,
                stage1: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The job's clock with the videos' total duration and real-time factor added."""
    if job is None:
        return None
    duration = sum(r["duration_s"] for r in stage1)
    scenes = sum(r["scenes"] for r in stage1)
    wall = job["wall_s"]
    return {**job, "video_s": duration, "scenes": scenes,
            "rtf": wall / duration if duration else None,
            "scenes_per_s": scenes / wall if wall else None,
            "video_s_per_s": duration / wall if wall else None}


def build_report(folders: Sequence[Path], rows: list[dict], bench: Any, options: RunOptions,
                 reference_speech: dict[str, float], failed: list[dict],
                 job: dict[str, Any] | None = None) -> dict[str, Any]:
    stage1 = stage1_rows(folders, reference_speech)
    baseline = (bench.baseline or (bench.models[0] if bench.models else None))
    summary = summarize(rows, baseline.partition("=")[0] if baseline else None)
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"),
            "system": system_info(), "options": to_dict(options),
            "bench": to_dict(bench), "baseline": baseline, "rows": rows, "summary": summary,
            "stage1": stage1, "job": job_summary(job, stage1),
            "job_wall_s": job["wall_s"] if job else None, "failed_inputs": failed}


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs over the same videos (one device call each, say).

    Rows are concatenated (a later run's row replaces an earlier one for the same model, mode
    and video); Stage 1, the job, system and options come from the first; summaries are
    recomputed.
    """
    first = reports[0]
    videos = {r["video"] for r in first["stage1"]}
    rows: dict[tuple[str, str, str], dict] = {}
    for report in reports:
        if {r["video"] for r in report["stage1"]} != videos:
            raise ValueError("reports cover different videos; they cannot be merged")
        for row in report["rows"]:
            rows[(row["model"], row["mode"], row["video"])] = row
    merged = dict(first, rows=list(rows.values()))
    merged["bench"] = dict(first["bench"], note="\n\n".join(
        dict.fromkeys(r["bench"].get("note", "") for r in reports if r["bench"].get("note"))))
    baseline = first["baseline"]
    merged["summary"] = summarize(merged["rows"], baseline.partition("=")[0] if baseline else None)
    merged["merged_from"] = [r["created"] for r in reports]
    return merged


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(report: dict[str, Any]) -> str:
    sys_ = report["system"]
    head = (f"# scenescribe bench\n\n{report['created']} on {sys_.get('gpu', 'CPU')} "
            f"({sys_.get('cpus')} CPUs); torch {sys_['versions'].get('torch', '-')}, "
            f"transformers {sys_['versions'].get('transformers', '-')}.\n")
    if report["bench"].get("note"):
        head += f"\n{report['bench']['note']}\n"
    parts = [head, "## VLM stage per model and video\n", _table(report["rows"], (
        "model", "mode", "weights", "video", "duration_s", "scenes", "scenes_timed", "vlm_s",
        "rtf", "s_per_scene", "batch", "peak_gpu_gb", "load_s", "status")),
        "\n## Per-model summary\n", _table(report["summary"], (
            "model", "mode", "weights", "videos", "scenes", "scenes_timed", "vlm_s", "rtf",
            "s_per_scene", "min_rtf", "max_rtf", "relative_speed", "speedup_vs_reference",
            "subset")),
        "\n## Stage 1 per video (compute seconds; load apart)\n",
        _table(report["stage1"], (
            "video", "duration_s", "scenes", "shots_s", "speech_s", "sounds_s", "detections_s",
            "objects_s",
            "stage1_s", "stage1_rtf", "reference_speech_s")),
        "\n## Whole job (one wall clock)\n", _job(report.get("job"))]
    return "\n".join(parts) + "\n"


def _job(job: dict[str, Any] | None) -> str:
    if not job:
        return "Not measured in this report.\n"
    what = f"captions by {job['model']}" if job.get("model") else "Stage 1 only, no captions"
    text = (f"`scenescribe run` over all {job['videos']} videos ({what}), one clock from the "
            f"command's start to the last record written: **{job['wall_s']:.1f} s** for "
            f"{job['video_s']:.0f} s of video, {job['scenes']} scenes (RTF {_fmt(job['rtf'])}). "
            f"Split: each model load once, each stage's compute summed over videos; stages "
            f"run side by side on GPU hosts, so the split sums to "
            f"{job['split_sum_s']:.1f} s ({job['overlap_s']:.1f} s overlapped).\n")
    text += _throughput(job)
    if job.get("cached"):
        text += (f"\n**Not a full job**: reused from cache: {', '.join(job['cached'])} "
                 f"(bench --fresh recomputes).\n")
    if job.get("stage1_wall_s") is not None:
        text += (f"\nStage 1 (every stage but the captions) done at "
                 f"**{job['stage1_wall_s']:.1f} s** on that clock; `from_s` and `to_s` say when "
                 f"each stage started and ended.\n")
    rows = [*job["stages"], {"stage": "sum", "load_s": job["load_s"],
                             "compute_s": job["compute_s"]}]
    columns = ("stage", "load_s", "compute_s", "from_s", "to_s", "cached")
    return text + "\n" + _table(rows, columns) + "\n"


def _throughput(job: dict[str, Any]) -> str:
    """The job's throughput by executor and GPU count (merged reports: one row per run)."""
    executor = job.get("executor") or {}
    if not executor or job.get("scenes_per_s") is None:
        return ""
    gpus = int(executor.get("gpus", 0))
    row = {"executor": executor.get("name", "local"), "GPUs": gpus,
           "scenes_per_s": job["scenes_per_s"], "video_s_per_s": job["video_s_per_s"]}
    note = " (no GPU: this machine or cluster has none, so the count is 0)" if not gpus else ""
    return (f"\nThroughput by GPU count{note}:\n\n"
            + _table([row], ("executor", "GPUs", "scenes_per_s", "video_s_per_s")) + "\n")


def write_chart(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = report["summary"]
    models = sorted({s["model"] for s in summary})
    modes = sorted({s["mode"] for s in summary})
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(models)), 3.5))
    width = 0.8 / max(len(modes), 1)
    for k, mode in enumerate(modes):
        values = [next((s["s_per_scene"] for s in summary
                        if s["model"] == m and s["mode"] == mode), 0.0) for m in models]
        ax.bar([i + k * width for i in range(len(models))], values, width, label=mode)
    ax.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(models))], models,
                  rotation=15)
    ax.set_ylabel("seconds per scene")
    ax.set_yscale("log")
    if modes:  # no timed row (every input failed): an empty chart without a legend
        ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], out: Path) -> None:
    atomic_write_json(out / "bench.json", report)
    with atomic_open(out / "bench.md") as f:
        f.write(to_markdown(report))
    write_chart(report, out / "bench.png")


def load_report(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
