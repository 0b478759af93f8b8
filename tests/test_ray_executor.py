"""``--executor ray``: a local Ray instance (2 CPUs) gives the records of a local run, survives a
killed worker, and resumes across executors in both directions."""

from __future__ import annotations

import _thread
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import scenescribe
from conftest import media
from fake_media import make_clip
from scenescribe.errors import OptionError
from scenescribe.executors.ray import FAULT_ENV
from scenescribe.options import CaptionOptions, ObjectOptions, RunOptions, run_options_from_mapping
from scenescribe.progress import NullProgress
from scenescribe.progress import Task as ProgressTask
from scenescribe.testing.tiny import build_tiny

STEMS = ("a_speech", "b_bunny", "c_silent")
CAPTIONER = "smolvlm2"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """One local Ray instance for the module; the runs join it (RayExecutor leaves it up)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    (folder / "a_speech.mp4").symlink_to(media("synthetic/synthetic_cuts_speech.mp4"))
    (folder / "b_bunny.webm").symlink_to(media("real/big_buck_bunny_0_30.webm"))
    make_clip(folder / "c_silent.mp4", seconds=3)
    return folder


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> RunOptions:
    tiny = build_tiny(CAPTIONER, tmp_path_factory.mktemp("tiny"))
    return RunOptions(device="cpu", objects=ObjectOptions(sample_fps=0.5, imgsz=160),
                      captions=CaptionOptions(models=(f"{CAPTIONER}={tiny}",), max_new_tokens=4))


@pytest.fixture(scope="module")
def reference(clips: Path, options: RunOptions,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """The local run's output files (run.json apart), the records every other run must match."""
    out = tmp_path_factory.mktemp("local")
    assert not scenescribe.run(clips, out, options).failed
    return {**_files(out), "run.json": {s: (out / s / "run.json").read_bytes() for s in STEMS}}


def _same(out: Path, reference: dict[str, dict[str, bytes]]) -> None:
    assert _files(out) == {s: reference[s] for s in STEMS}


def _files(out: Path) -> dict[str, dict[str, bytes]]:
    """Per video, every visible output file but run.json (its timings differ run to run)."""
    return {stem: {str(p.relative_to(out / stem)): p.read_bytes()
                   for p in sorted((out / stem).rglob("*"))
                   if p.is_file() and ".work" not in p.parts and p.name != "run.json"}
            for stem in STEMS}


def _facts(out: Path, stem: str) -> dict[str, Any]:
    return json.loads((out / stem / "run.json").read_text())


def _same_facts(want: dict[str, Any], got: dict[str, Any]) -> None:
    for key in ("video", "models", "versions"):
        assert got.get(key) == want.get(key), key
    assert {k: v["key"] for k, v in got["stages"].items()} == {
        k: v["key"] for k, v in want["stages"].items()}


class _Trigger:
    """Progress that calls ``act`` when a task with ``description`` opens (once)."""

    def __init__(self, description: str, act: Callable[[], None]) -> None:
        self.description = description
        self.act = act
        self.fired = False

    def task(self, description: str, total: float | None = None) -> ProgressTask:
        if description == self.description and not self.fired:
            self.fired = True
            self.act()
        return NullProgress().task(description, total)


def _ray(options: RunOptions) -> RunOptions:
    return dataclasses.replace(options, executor="ray")


def test_ray_run_matches_local(ray_instance: None, clips: Path, options: RunOptions,
                               reference: dict[str, dict[str, bytes]], tmp_path: Path) -> None:
    result = scenescribe.run(clips, tmp_path, _ray(options))
    assert not result.failed and not result.warnings
    _same(tmp_path, reference)
    for stem in STEMS:
        want, got = json.loads(reference["run.json"][stem]), _facts(tmp_path, stem)
        _same_facts(want, got)
        assert got["options"]["executor"] == "ray"
        for name, timing in got["timings"].items():
            where = timing["ran_on"]
            assert where["executor"] == "ray" and where["pid"] > 0, name
        workers = {n: t["ran_on"]["worker"] for n, t in got["timings"].items()}
        assert workers["shots"] == "task" and workers[f"captions[{CAPTIONER}]"].startswith("actor")
        assert "ran_on" not in json.dumps(want["timings"])
    # One captioner actor for all three videos: each model loaded once, not once per video.
    pids = {_facts(tmp_path, s)["timings"][f"captions[{CAPTIONER}]"]["ran_on"]["pid"]
            for s in STEMS}
    assert len(pids) == 1


def test_killed_workers_are_retried(ray_instance: None, clips: Path, options: RunOptions,
                                    reference: dict[str, dict[str, bytes]], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A task (shots) and an actor (the captioner) are SIGKILLed after their first video."""
    markers = {"shots": tmp_path / "shots.killed", f"captions[{CAPTIONER}]": tmp_path / "vlm.killed"}
    monkeypatch.setenv(FAULT_ENV, ",".join(f"{k}={v}" for k, v in markers.items()))
    result = scenescribe.run(clips, tmp_path / "out", _ray(options))
    assert all(m.exists() for m in markers.values())  # the faults did fire
    assert not result.failed and not result.warnings
    _same(tmp_path / "out", reference)


def test_local_interrupted_then_finished_on_ray(ray_instance: None, clips: Path,
                                                options: RunOptions,
                                                reference: dict[str, dict[str, bytes]],
                                                tmp_path: Path) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    trigger = _Trigger("b_bunny.webm: frames", interrupt)
    with pytest.raises(KeyboardInterrupt):
        scenescribe.run(clips, tmp_path, options, progress=trigger)
    assert trigger.fired and not (tmp_path / "a_speech" / "scenes.jsonl").exists()
    result = scenescribe.run(clips, tmp_path, _ray(options))
    assert not result.failed
    _same(tmp_path, reference)
    reused = result.videos[0].stages
    assert reused["speech"] == "cached" and reused["frames"] == "cached"  # the local run's work


def test_ray_interrupted_then_finished_locally(ray_instance: None, clips: Path,
                                               options: RunOptions,
                                               reference: dict[str, dict[str, bytes]],
                                               tmp_path: Path) -> None:
    # The driver's progress view opens this bar when the worker reports b's frames: Ctrl-C then.
    trigger = _Trigger("b_bunny.webm: frames", _thread.interrupt_main)
    with pytest.raises(KeyboardInterrupt):
        scenescribe.run(clips, tmp_path, _ray(options), progress=trigger)
    assert trigger.fired and not (tmp_path / "a_speech" / "scenes.jsonl").exists()
    result = scenescribe.run(clips, tmp_path, options)
    assert not result.failed
    _same(tmp_path, reference)
    assert result.videos[0].stages["speech"] == "cached"  # computed on Ray, reused here


def test_options_name_the_executor(tmp_path: Path) -> None:
    assert run_options_from_mapping({"executor": "ray", "address": "auto"}).executor == "ray"
    with pytest.raises(OptionError, match=r"executor \(--executor\): expected one of local, ray"):
        RunOptions(executor="dask")
    with pytest.raises(OptionError, match=r"address \(--address\): expected only with executor"):
        scenescribe.run(tmp_path, tmp_path / "out", RunOptions(address="10.0.0.1:6379"))


def test_local_run_never_imports_ray(tmp_path: Path) -> None:
    code = ("import sys, scenescribe\n"
            "from scenescribe.options import RunOptions\n"
            f"r = scenescribe.run({str(media('synthetic/synthetic_cuts_speech.mp4'))!r}, "
            f"{str(tmp_path)!r}, RunOptions(stages=(), device='cpu'))\n"
            "assert not r.failed\n"
            "print('ray' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
