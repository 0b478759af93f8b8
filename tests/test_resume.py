"""Resumability: SIGKILL part-way then rerun gives the records of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import scenescribe
from scenescribe.backend import Backend
from scenescribe.options import RunOptions

STAGES = "speech,sounds"


def _cmd(video: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "scenescribe", "run", str(video), "--out", str(out),
            "--stages", STAGES]


def _files(folder: Path) -> dict[str, bytes]:
    """Every visible output file (checkpoints and run facts with timings excluded)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".work" not in p.parts and p.name != "run.json"}


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path: Path, synthetic_clip: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    clean = tmp_path / "clean"
    subprocess.run(_cmd(synthetic_clip, clean), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    work = killed / "synthetic_cuts_speech" / ".work"
    proc = subprocess.Popen(_cmd(synthetic_clip, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Kill once Stage 1 has started writing checkpoints, i.e. mid-run.
    while time.monotonic() < deadline and not list(work.glob("*.partial")):
        assert proc.poll() is None, "run finished before it could be killed"
        time.sleep(0.01)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "synthetic_cuts_speech" / "scenes.jsonl").exists()

    subprocess.run(_cmd(synthetic_clip, killed), check=True, env=env, capture_output=True)
    want = _files(clean / "synthetic_cuts_speech")
    got = _files(killed / "synthetic_cuts_speech")
    assert want.keys() == got.keys()
    assert want == got
    assert not list(killed.rglob("*.partial")) and not list(killed.rglob(".*.tmp-*"))


def test_rerun_reuses_every_stage(tmp_path: Path, synthetic_clip: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    options = RunOptions(stages=("sounds",))
    first = scenescribe.run(synthetic_clip, tmp_path, options)
    assert not first.failed
    scenes_file = tmp_path / "synthetic_cuts_speech" / "scenes.jsonl"
    before = scenes_file.read_bytes()
    loaded: list[str] = []
    real_load = Backend.load
    monkeypatch.setattr(Backend, "load", lambda self: (loaded.append(self.name), real_load(self)))
    second = scenescribe.run(synthetic_clip, tmp_path, options)
    assert loaded == []  # nothing to compute: no model is loaded
    timings = second.videos[0].timings
    assert {k: v["cached"] for k, v in timings.items()} == {
        "shots": True, "frames": True, "sounds": True}
    assert all(v["load_s"] == 0 for v in timings.values())
    assert scenes_file.read_bytes() == before
    forced = scenescribe.run(synthetic_clip, tmp_path, options, force=True)
    assert not any(v["cached"] for v in forced.videos[0].timings.values())


def test_side_by_side_components_match_sequential(tmp_path: Path, synthetic_clip: Path) -> None:
    """Stage 1 components run concurrently (as on GPU hosts) write the same records."""
    results = {}
    for parallel in (False, True):
        options = RunOptions(stages=("speech", "sounds"), parallel=parallel, device="cpu")
        out = tmp_path / str(parallel)
        assert not scenescribe.run(synthetic_clip, out, options).failed
        results[parallel] = (out / "synthetic_cuts_speech" / "scenes.jsonl").read_bytes()
    assert results[True] == results[False]
