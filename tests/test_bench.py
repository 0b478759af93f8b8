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

from scenescribe.captions.tiny import build_tiny
from scenescribe.cli import app

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("llava-v1.6-vicuna-7b", "instructblip-vicuna-7b")


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("w1-small")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_w1_suite.py"), "--out", str(out),
                    "--small", "--only", "w1s_interview"], check=True, capture_output=True)
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

    gt = json.loads(next(small_suite.glob("*.gt.json")).read_text())
    rows = report["rows"]
    assert {(r["model"], r["mode"]) for r in rows} == {
        (m, mode) for m in MODELS for mode in ("scenescribe", "reference")}
    for r in rows:
        assert r["status"] == "ok" and r["weights"] == "real"
        assert r["scenes"] == report["stage1"][0]["scenes"] == r["scenes_timed"] >= 1
        assert r["rtf"] == pytest.approx(r["vlm_s"] / r["duration_s"])
        assert r["vlm_s"] == pytest.approx(r["s_per_scene"] * r["scenes"])
        assert r["vlm_s"] >= r["caption_s"] > 0
    summary = {(s["model"], s["mode"]): s for s in report["summary"]}
    for (model, mode), s in summary.items():
        mine = [r for r in rows if r["model"] == model and r["mode"] == mode]
        assert s["mean_rtf"] == pytest.approx(sum(r["rtf"] for r in mine) / len(mine))
        base = summary[(MODELS[0], mode)]
        assert s["relative_speed"] == pytest.approx(
            base["mean_s_per_scene"] / s["mean_s_per_scene"])
        if mode == "scenescribe":
            ref = summary[(model, "reference")]
            assert s["speedup_vs_reference"] == pytest.approx(
                ref["mean_s_per_scene"] / s["mean_s_per_scene"])
    (stage1,) = report["stage1"]
    assert stage1["duration_s"] == pytest.approx(gt["video"]["duration_s"], abs=0.05)
    assert stage1["stage1_s"] == pytest.approx(
        sum(stage1[f"{k}_s"] for k in ("shots", "speech", "sounds", "objects")))
    assert stage1["stage1_rtf"] == pytest.approx(stage1["stage1_s"] / stage1["duration_s"])
    for total in report["totals"]:
        s = summary[(total["model"], total["mode"])]
        assert total["total_s"] == pytest.approx(total["stage1_s"] + s["vlm_s"])
        assert total["rtf"] == pytest.approx(total["total_s"] / total["video_s"])
