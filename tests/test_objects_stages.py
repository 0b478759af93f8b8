"""The detections' checkpoint resumes chunk by chunk and survives damage (fake backends);
``test_graph.test_plan_shape`` checks where the two object stages sit in the graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import scenescribe
from fake_media import make_clip
from fake_setup import fake_options
from scenescribe import objects_stages
from scenescribe.testing import fakes


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "in" / "clip.mp4", seconds=4)  # 8 ticks at 2 fps


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects_stages, "CHUNK_TICKS", 3)  # chunks 0-2, 3-5, 6-7
    fakes.reset()


def _options() -> scenescribe.RunOptions:
    from dataclasses import replace

    return replace(fake_options(), stages=("objects",))


def _detections_file(out: Path) -> Path:
    (found,) = (out / "clip" / ".work").glob("detections-*.jsonl")
    return found


def _records(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "clip" / "scenes.jsonl").read_text().splitlines()]


def test_a_run_cut_short_detects_only_the_chunks_it_lacks(tmp_path: Path, clip: Path) -> None:
    out = tmp_path / "out"
    first = scenescribe.run(clip, out, _options())
    assert not first.failed and fakes.DETECTED["fake-objects"] == 8
    whole = _records(out)
    assert [o["label"] for r in whole for o in r["objects"]] == ["person"] * len(whole)
    lines = _detections_file(out).read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [-1, 0, 1, 2]

    # As a crash leaves it: the names and the first chunk in the partial file, nothing final.
    final = _detections_file(out)
    final.with_name(final.name + ".partial").write_text("\n".join(lines[:2]) + "\n")
    final.unlink()
    for path in (out / "clip" / ".work").glob("objects-*"):
        path.unlink()
    (out / "clip" / "scenes.jsonl").unlink()
    fakes.reset()
    second = scenescribe.run(clip, out, _options())
    assert not second.failed
    assert fakes.DETECTED["fake-objects"] == 5  # ticks 3-7: chunk 0 was kept
    assert _records(out) == whole
    assert _detections_file(out).read_text().splitlines() == lines


def test_a_damaged_chunk_is_detected_again_with_a_warning(tmp_path: Path, clip: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    scenescribe.run(clip, out, _options())
    path = _detections_file(out)
    lines = path.read_text().splitlines()
    broken = json.loads(lines[2])
    broken["frames"][0][3] = [["x", 1, 2, 3, 4, 5]]  # a box that is no number
    path.write_text("\n".join([lines[0], lines[1], json.dumps(broken), lines[3]]) + "\n")
    fakes.reset()
    again = scenescribe.run(clip, out, _options())
    assert not again.failed
    assert fakes.DETECTED["fake-objects"] == 3  # chunk 1 only
    assert "damaged" in caplog.text and path.name in caplog.text
    assert path.read_text().splitlines() == lines
    assert not again.videos[0].timings["detections"]["cached"]
    assert again.videos[0].timings["objects"]["cached"]  # same key: its own lines were whole
