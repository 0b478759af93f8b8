"""Orchestration robustness with inputs made at test time: hostile names, other people's
folders, concurrent runs, damaged caches, failing captioners (issue 11: 1, 2, 5, 10; issue 9)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import scenescribe
from fake_media import make_clip
from fake_setup import FAKE_CLI, fake_options
from scenescribe import locks
from scenescribe.cli import app
from scenescribe.locks import FolderBusyError
from scenescribe.testing import fakes
from scenescribe.workspace import LOCK_FILE, output_folders, safe_stem


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    fakes.reset()
    return make_clip(tmp_path / "in" / "clip.mp4")


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


HOSTILE = ["...mp4", "..mp4", ".mp4", "a\nb\x07.mp4", "back\\slash.mp4", "été 北京.mp4",
           "[red]x[/red].mp4", " .. .mp4"]


def test_safe_stems_never_leave_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folders = output_folders([Path("/x") / n for n in HOSTILE] + [Path("/y/..mp4")], out)
    assert all(f.parent == out and f.name not in {"", ".", ".."} for f in folders)
    assert len(set(folders)) == len(folders)
    assert safe_stem(Path("été 北京.mp4")) == "été 北京"
    assert safe_stem(Path("a/b")) == "b" and safe_stem(Path("...")) == "video"
    assert "\n" not in safe_stem(Path("a\nb.mp4")) and "\\" not in safe_stem(Path("a\\b.mp4"))


def test_hostile_names_processed_inside_out(clip: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "src" / "keep.py").write_text("precious")
    inputs = []
    for name in HOSTILE:
        path = work / "in" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(clip.read_bytes())
        inputs.append(path)
    junk = work / "in" / "x" / "..mp4"  # fails: not a video; its cleanup must stay inside --out
    junk.parent.mkdir()
    junk.write_bytes(b"not a video at all")
    before = tree(work)
    result = scenescribe.run([*inputs, junk], work / "out", fake_options())
    assert [v.ok for v in result.videos] == [True] * len(HOSTILE) + [False]
    assert tree(work) - before == {p for p in tree(work) if p.startswith("out")}
    assert (work / "src" / "keep.py").read_text() == "precious"
    made = sorted(p.name for p in (work / "out").iterdir())
    assert len(made) == len(HOSTILE)
    assert all((work / "out" / name / "scenes.jsonl").exists() for name in made)


def test_failing_input_never_deletes_a_folder_it_did_not_create(tmp_path: Path) -> None:
    out = tmp_path / "out"
    mine = out / "clip"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's own file")
    (mine / "scenes.jsonl").write_text('{"earlier": "results, .work removed"}\n')
    bad = tmp_path / "in" / "clip.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00" * 100)
    result = scenescribe.run(bad, out, fake_options())
    assert result.failed and str(bad) in (result.videos[0].error or "")
    assert tree(mine) == {"notes.txt", "scenes.jsonl"}  # untouched, and the lock is gone
    # A folder this run created for the failed input is removed, and --out with it if empty.
    fresh = tmp_path / "fresh"
    assert scenescribe.run(bad, fresh, fake_options()).failed
    assert not fresh.exists()


def test_out_is_a_file_is_one_line(clip: Path, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    result = CliRunner().invoke(app, ["run", str(clip), "--out", str(target), *FAKE_CLI])
    assert result.exit_code == 2  # bad usage: checked with the options, before any work
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert target.read_text() == "x"


def test_second_run_on_a_busy_folder_stops_at_once(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "clip").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from scenescribe import locks; "
         "from pathlib import Path; locks.acquire(Path(sys.argv[1])); print('held', flush=True); "
         "time.sleep(60)", str(out / "clip" / LOCK_FILE)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=f"pid {holder.pid}"):
            scenescribe.run(clip, out, fake_options())
        assert not fakes.CALLS and not (out / "clip" / ".work").exists()  # no work was done
        result = CliRunner().invoke(app, ["run", str(clip), "--out", str(out), *FAKE_CLI])
        assert result.exit_code == 1 and "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by another scenescribe run" in lines[0]
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock is stale and the next run takes it over.
    assert (out / "clip" / LOCK_FILE).exists()
    assert not scenescribe.run(clip, out, fake_options()).failed
    assert not (out / "clip" / LOCK_FILE).exists()


def test_lock_refuses_a_second_holder_in_the_same_process(tmp_path: Path) -> None:
    lock = tmp_path / LOCK_FILE
    locks.acquire(lock)
    with pytest.raises(FolderBusyError):
        locks.acquire(lock)
    locks.release(lock)
    assert not lock.exists()


def test_two_runs_at_once_one_stops_cleanly(clip: Path, tmp_path: Path) -> None:
    """Two real processes on one --out: each either finishes or stops with one line."""
    out = tmp_path / "out"
    code = ("import sys; from scenescribe.testing.fakes import register_fakes; register_fakes(); "
            "from scenescribe.cli import main; sys.argv = ['scenescribe', *sys.argv[1:]]; main()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-c", code, "run", str(clip), "--out", str(out), *FAKE_CLI,
           "--stages", "speech,sounds,objects"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outcomes = [(p.wait(60), *p.communicate()) for p in procs]
    assert any(rc == 0 for rc, _, _ in outcomes)
    for rc, _, err in outcomes:
        assert "Traceback" not in err
        if rc != 0:
            assert rc == 1 and "in use by another scenescribe run" in err
            assert len(err.strip().splitlines()) == 1
    assert (out / "clip" / "scenes.jsonl").exists() and not (out / "clip" / LOCK_FILE).exists()


def test_damaged_checkpoint_is_recomputed_with_a_warning(clip: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    assert not scenescribe.run(clip, out, fake_options("fake-vlm-a")).failed
    want = (out / "clip" / "scenes.jsonl").read_text()
    work = out / "clip" / ".work"
    sounds = next(work.glob("sounds-*.jsonl"))
    sounds.write_bytes(b'{"index": 0, "sounds": [\x00\xff garbage\n')
    shots = next(work.glob("shots-*.json"))
    shots.write_text("{ truncated")
    fakes.reset()
    with caplog.at_level(logging.WARNING):
        result = scenescribe.run(clip, out, fake_options("fake-vlm-a"))
    assert not result.failed
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(sounds) in warned and str(shots) in warned
    stages = result.videos[0].stages
    assert stages["sounds"] == stages["shots"] == "computed"
    assert stages["speech"] == stages["captions[fake-vlm-a]"] == "cached"  # same keys
    assert (out / "clip" / "scenes.jsonl").read_text() == want


def test_all_captions_failing_is_not_ok_and_retried(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(clip), "--out", str(out), *FAKE_CLI,
                                      "--vlm", "fake-vlm-errors"])
    assert result.exit_code == 1
    assert not result.stdout.startswith("ok") and "ok " not in result.stdout
    failed = [x for x in result.stderr.splitlines() if x.startswith("failed:")]
    assert len(failed) == 1 and "fake-vlm-errors" in failed[0] and "HTTP 401" in failed[0]
    rows = [json.loads(x) for x in (out / "clip" / "scenes.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["transcript"]["text"] and r["frames"] for r in rows)
    assert all(r["captions"]["fake-vlm-errors"]["error"].startswith("HTTP 401") for r in rows)
    facts = json.loads((out / "clip" / "run.json").read_text())
    assert facts["stages"]["captions[fake-vlm-errors]"]["status"] == "failed"
    fakes.reset()
    again = scenescribe.run(clip, out, fake_options("fake-vlm-errors"))
    assert again.failed and fakes.CALLS == {"fake-vlm-errors": 4}  # not cached: retried


def test_captioner_crash_keeps_stage1_and_names_the_model(clip: Path, tmp_path: Path) -> None:
    """Issue 9: a failure at generation time never loses Stage 1."""
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(clip), "--out", str(out), *FAKE_CLI,
                                      "--vlm", "fake-vlm-broken", "--vlm", "fake-vlm-a"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    warning = [x for x in result.stderr.splitlines() if "fake-vlm-broken" in x]
    assert len(warning) == 1 and "ValueError: too many values to unpack" in warning[0]
    rows = [json.loads(x) for x in (out / "clip" / "scenes.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["transcript"]["text"] and r["sounds"] for r in rows)
    broken = [r["captions"]["fake-vlm-broken"] for r in rows]
    assert broken[0]["text"] and all("ValueError" in c["error"] for c in broken[1:])
    assert all(r["captions"]["fake-vlm-a"]["text"] for r in rows)  # the next model still ran
    facts = json.loads((out / "clip" / "run.json").read_text())
    assert facts["stages"]["captions[fake-vlm-broken]"] == {
        "status": "partial", "key": facts["stages"]["captions[fake-vlm-broken]"]["key"],
        "failed_scenes": 3}
    fakes.reset()
    scenescribe.run(clip, out, fake_options("fake-vlm-broken", "fake-vlm-a"))
    assert fakes.CALLS == {"fake-vlm-broken": 2}  # only the failed scenes are asked again


def test_captioner_that_cannot_load_keeps_stage1(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(clip), "--out", str(out), *FAKE_CLI,
                                      "--vlm", "fake-vlm-noload"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    warning = [x for x in result.stderr.splitlines() if "fake-vlm-noload" in x]
    assert len(warning) == 1 and "ValueError" in warning[0]
    rows = [json.loads(x) for x in (out / "clip" / "scenes.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["transcript"]["text"] and not r["captions"] for r in rows)
    facts = json.loads((out / "clip" / "run.json").read_text())
    assert "captions[fake-vlm-noload]" not in facts["stages"]


def test_half_written_lock_is_busy_while_young_and_stale_when_old(tmp_path: Path) -> None:
    lock = tmp_path / LOCK_FILE
    lock.write_text("")  # another run between creating its lock and writing its pid
    with pytest.raises(FolderBusyError):
        locks.acquire(lock)
    os.utime(lock, (0, 0))  # long ago: a run killed at that instant
    locks.acquire(lock)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    locks.release(lock)
