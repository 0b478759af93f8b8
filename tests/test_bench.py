"""`scenescribe bench` on CPU: small W1 suite, real small Stage 1 models, tiny captioners.

Checks the structure and the arithmetic of the report, not the speed (speed claims come from the
benchmark runs, never from tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scenescribe.bench_report import merge_reports
from scenescribe.cli import app
from scenescribe.testing.tiny import build_tiny

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("llava-v1.6-vicuna-7b", "instructblip-vicuna-7b")


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("w1-small")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_w1_suite.py"), "--out", str(out),
                    "--small", "--only", "w1s_interview", "--only", "w1s_sitcom"], check=True,
                   capture_output=True)
    return out


def test_bench_report_structure_and_arithmetic(tmp_path: Path, small_suite: Path) -> None:
    tiny = tmp_path / "tiny"
    specs = []
    for name in MODELS:
        specs += ["--vlm", f"{name}={build_tiny(name, tiny)}"]
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", str(small_suite), "--out", str(out), *specs,
                                      "--max-new-tokens", "4", "--device", "cpu",
                                      "--baseline", MODELS[0]])
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text().count("\n## ") == 4
    assert (out / "bench.png").stat().st_size > 1000

    cpu = report["job"]["cpu"]  # the CPUs' busy share while the job ran (Linux: /proc/stat)
    assert cpu["busy"] and all(0.0 <= b <= 1.0 for b in cpu["busy"])
    assert cpu["job_cpu_s"] > 0 and 0 < cpu["job_share"] <= 1.0

    gts = {p.name.removesuffix(".gt.json"): json.loads(p.read_text())
           for p in small_suite.glob("*.gt.json")}
    stage1 = {r["video"]: r for r in report["stage1"]}
    assert set(stage1) == set(gts)
    rows = report["rows"]
    assert {(r["model"], r["mode"]) for r in rows} == {
        (m, mode) for m in MODELS for mode in ("scenescribe", "reference")}
    for r in rows:
        assert r["status"] == "ok" and r["weights"] == "real"
        assert r["rtf"] == pytest.approx(r["vlm_s"] / r["duration_s"])
        assert r["vlm_s"] == pytest.approx(r["s_per_scene"] * r["scenes"])
        assert r["vlm_s"] >= r["caption_s"] > 0  # frames are the job's, not counted again
        assert r["s_per_scene"] == pytest.approx(r["caption_s"] / r["scenes_timed"])
        if r["mode"] == "reference":  # video by video
            assert r["scenes"] == stage1[r["video"]]["scenes"] == r["scenes_timed"] >= 1
        else:  # both videos pooled into one stream
            assert r["videos"] == 2 and r["video"] == "all 2 (pooled)"
            assert r["scenes"] == r["scenes_timed"] == sum(s["scenes"] for s in stage1.values())
            assert r["duration_s"] == pytest.approx(sum(s["duration_s"] for s in stage1.values()))
            # The engine's split of the caption time: its model calls within the clock.
            assert 0 < r["generate_s"] <= r["caption_s"] and r["batches"] >= 1
            assert 0 <= r["prepare_wait_s"] <= r["caption_s"] - r["generate_s"] + 1e-3
        assert "alloc_retries" not in r  # CUDA's allocator only
    summary = {(s["model"], s["mode"]): s for s in report["summary"]}
    for (model, mode), s in summary.items():
        mine = [r for r in rows if r["model"] == model and r["mode"] == mode]
        assert s["videos"] == 2
        assert s["vlm_s"] == pytest.approx(sum(r["vlm_s"] for r in mine))
        assert s["s_per_scene"] == pytest.approx(s["vlm_s"] / sum(r["scenes"] for r in mine))
        assert s["rtf"] == pytest.approx(s["vlm_s"] / sum(r["duration_s"] for r in mine))
        assert s["mean_rtf"] == pytest.approx(sum(r["rtf"] for r in mine) / len(mine))
        base = summary[(MODELS[0], mode)]
        assert s["relative_speed"] == pytest.approx(base["s_per_scene"] / s["s_per_scene"])
        if mode == "scenescribe":
            ref = summary[(model, "reference")]
            assert s["speedup_vs_reference"] == pytest.approx(
                ref["s_per_scene"] / s["s_per_scene"])
    for name, row in stage1.items():
        assert row["duration_s"] == pytest.approx(gts[name]["video"]["duration_s"], abs=0.05)
        assert row["stage1_s"] == pytest.approx(
            sum(row[f"{k}_s"] for k in ("shots", "speech", "sounds", "detections", "objects")))
        assert row["stage1_rtf"] == pytest.approx(row["stage1_s"] / row["duration_s"])
        # the real small models ran: YOLO in the detections stage, ByteTrack in objects
        assert row["speech_s"] > 0 and row["detections_s"] > 0 and row["objects_s"] > 0
    job = report["job"]  # one clock around `run` with the first model's captions
    assert job["model"] == MODELS[0] and job["videos"] == 2 and not job["cached"]
    assert report["job_wall_s"] == job["wall_s"] > 0
    assert job["video_s"] == pytest.approx(sum(r["duration_s"] for r in stage1.values()))
    assert job["rtf"] == pytest.approx(job["wall_s"] / job["video_s"])
    split = {r["stage"]: r for r in job["stages"]}
    assert {"shots", "frames", "speech", "sounds", "objects", f"captions[{MODELS[0]}]"} <= set(split)
    # On CPU the stages run one after another, except frames and objects, which share one
    # decode pass (their times overlap): the rest of the split fits inside the one clock.
    assert job["split_sum_s"] == pytest.approx(job["load_s"] + job["compute_s"])
    assert job["split_sum_s"] - split["frames"]["compute_s"] <= job["wall_s"]
    assert split["speech"]["compute_s"] == pytest.approx(sum(r["speech_s"] for r in stage1.values()))
    assert "Whole job (one wall clock)" in (out / "bench.md").read_text()

    # Reports of separate runs (one device call per model, say) merge into the same tables.
    half = len(rows) // 2
    parts = [dict(report, rows=rows[:half]), dict(report, rows=rows[half:])]
    merged = merge_reports(parts)
    assert merged["summary"] == report["summary"]
    assert merged["job"] == report["job"]
    with pytest.raises(ValueError, match="different videos"):
        merge_reports([report, dict(report, stage1=report["stage1"][:1])])


def test_the_reference_rows_run_transformers_generate_one_scene_at_a_time() -> None:
    from scenescribe.bench import caption_mode_options
    from scenescribe.options import CaptionOptions

    ours = CaptionOptions(batch_size=0, decoder="auto")
    assert caption_mode_options(ours, "llava-v1.6-vicuna-7b", "scenescribe") is ours
    reference = caption_mode_options(ours, "llava-v1.6-vicuna-7b", "reference")
    assert (reference.batch_size, reference.decoder, reference.use_cache) == (1, "generate", True)
    assert not caption_mode_options(ours, "phi-3.5-vision", "reference").use_cache
