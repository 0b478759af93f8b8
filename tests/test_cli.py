"""The CLI end to end on real clips and on every bad input: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import media
from scenescribe.cli import app

runner = CliRunner()

BAD = ["bad_inputs/zero_bytes.mp4", "bad_inputs/not_a_video.mp4",
       "bad_inputs/truncated_no_moov.mp4"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def scenes_of(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "scenes.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("rel", BAD)
def test_bad_input_is_one_line_error_exit_1(rel: str, tmp_path: Path) -> None:
    path = media(rel)
    code, _, stderr = invoke("run", str(path), "--out", str(tmp_path), "--stages", "none")
    assert code == 1
    assert "Traceback" not in stderr
    failed = [line for line in stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and str(path) in failed[0]
    assert not any(tmp_path.iterdir()), "no partial output may be left behind"


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    good = media("bad_inputs/no_audio.mp4")
    bad = media("bad_inputs/not_a_video.mp4")
    code, _, stderr = invoke("run", str(bad), str(good), "--out", str(tmp_path),
                                  "--stages", "none")
    assert code == 1
    assert "1 of 2 input(s) failed" in stderr and str(bad) in stderr
    assert scenes_of(tmp_path / "no_audio")
    assert not (tmp_path / "not_a_video").exists()


def test_edge_inputs_process(tmp_path: Path) -> None:
    files = [media(f"bad_inputs/{n}") for n in ("one_frame.mp4", "no_audio.mp4",
                                                "audio_only.wav")]
    code, _, stderr = invoke("run", *map(str, files), "--out", str(tmp_path),
                             "--stages", "speech")
    assert code == 0, stderr
    one = scenes_of(tmp_path / "one_frame")
    assert len(one) == 1 and len(one[0]["frames"]) >= 1
    no_audio = scenes_of(tmp_path / "no_audio")
    assert all(s["transcript"] == {"text": "", "words": []} for s in no_audio)
    audio = scenes_of(tmp_path / "audio_only")
    assert len(audio) == 1 and audio[0]["frames"] == []
    assert audio[0]["end"] == pytest.approx(5.0, abs=0.05)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert invoke("run")[0] == 2
    assert invoke("run", "x.mp4", "--no-such-flag")[0] == 2


def test_unknown_backend_is_user_error(tmp_path: Path, synthetic_clip: Path) -> None:
    code, _, stderr = invoke("run", str(synthetic_clip), "--out", str(tmp_path),
                             "--shots", "nope")
    assert code == 1 and "unknown shots backend 'nope'" in stderr and "adaptive" in stderr


def test_models_lists_registry() -> None:
    code, stdout, _ = invoke("models")
    assert code == 0
    for name in ("adaptive", "transnetv2", "yamnet", "yolov8n", "llava-v1.6-mistral-7b"):
        assert name in stdout


def test_scenes_prints_table(synthetic_clip: Path) -> None:
    code, stdout, _ = invoke("scenes", str(synthetic_clip))
    assert code == 0 and "7 scenes" in stdout


def test_exports_without_vlm_show_labelled_summaries(tmp_path: Path, synthetic_clip: Path) -> None:
    code, _, stderr = invoke("run", str(synthetic_clip), "--out", str(tmp_path),
                             "--stages", "none")
    assert code == 0, stderr
    folder = tmp_path / "synthetic_cuts_speech"
    records = scenes_of(folder)
    assert all(r["summary"]["source"] == "stage1-facts" and r["captions"] == {} for r in records)
    for fmt in ("json", "jsonl", "srt", "vtt", "html"):
        code, _, stderr = invoke("export", str(tmp_path), "--format", fmt)
        assert code == 0, stderr
    srt = (folder / "synthetic_cuts_speech.srt").read_text()
    assert srt.count(" --> ") == len(records) and "[summary" in srt
    assert "00:00:04,000" in srt
    vtt = (folder / "synthetic_cuts_speech.vtt").read_text()
    assert vtt.startswith("WEBVTT") and "00:00:04.000" in vtt
    doc = json.loads((folder / "synthetic_cuts_speech.json").read_text())
    assert len(doc["scenes"]) == len(records) and doc["facts"]["scenes"] == len(records)
    assert invoke("export", str(tmp_path), "--format", "pdf")[0] == 2
