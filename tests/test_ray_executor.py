"""``--executor ray``: a local Ray instance (2 CPUs) gives the records of a local run, survives a
killed worker, and resumes across executors in both directions."""

from __future__ import annotations

import _thread
import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import scenescribe
from conftest import media
from fake_media import head, make_clip
from scenescribe.errors import OptionError
from scenescribe.executors.ray_batch import FAULT_ENV
from scenescribe.options import CaptionOptions, ObjectOptions, RunOptions, run_options_from_mapping
from scenescribe.progress import NullProgress
from scenescribe.progress import Task as ProgressTask
from scenescribe.testing.tiny import build_tiny

STEMS = ("a_speech", "b_bunny", "c_silent")
CAPTIONER = "smolvlm2"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """One local Ray instance for the module; the runs join it (RayExecutor leaves it up). Its
    two GPUs are resources only (there are none here): the runs say ``device="cpu"``, and the
    model pool's placement on GPUs is checked without CUDA."""
    import ray

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    (folder / "a_speech.mp4").symlink_to(media("synthetic/synthetic_cuts_speech.mp4"))
    head(media("real/big_buck_bunny_0_30.webm"), folder / "b_bunny.webm", seconds=8)
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


def _ray(options: RunOptions, parallel: bool | None = None) -> RunOptions:
    """On Ray; ``parallel`` runs a level's models side by side (as on GPU hosts): their
    workers start together, which keeps these tests short."""
    return dataclasses.replace(options, executor="ray", parallel=parallel)


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
    """A task (shots) and a model actor (running sounds) are SIGKILLed after their first
    video; Ray runs the task again and restarts the actor, which resumes from checkpoints."""
    markers = {"shots": tmp_path / "shots.killed", "sounds": tmp_path / "sounds.killed"}
    monkeypatch.setenv(FAULT_ENV, ",".join(f"{k}={v}" for k, v in markers.items()))
    result = scenescribe.run(clips, tmp_path / "out", _ray(options, parallel=True))
    assert all(m.exists() for m in markers.values())  # the faults did fire
    assert not result.failed and not result.warnings
    _same(tmp_path / "out", reference)


def test_a_video_that_kills_its_worker_fails_alone(ray_instance: None, clips: Path,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The sounds actor dies whenever it is given c: past its retries, each video of its share
    gets an actor of its own, and only c fails."""
    from scenescribe.executors import ray_remote

    monkeypatch.setattr(ray_remote, "RETRIES", 1)
    monkeypatch.setenv(FAULT_ENV, "sounds@c_silent.mp4")
    result = scenescribe.run(clips, tmp_path, RunOptions(device="cpu", stages=("sounds",),
                                                         executor="ray"))
    assert [v.ok for v in result.videos] == [True, True, False]
    error = result.videos[2].error or ""
    assert error.startswith(f"{clips / 'c_silent.mp4'}: sounds: worker failed"), error
    assert (tmp_path / "b_bunny" / "scenes.jsonl").exists()
    assert not (tmp_path / "c_silent").exists()  # what the run created for c is removed


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
    result = scenescribe.run(clips, tmp_path, _ray(options, parallel=True))
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
        scenescribe.run(clips, tmp_path, _ray(options, parallel=True), progress=trigger)
    assert trigger.fired and not (tmp_path / "a_speech" / "scenes.jsonl").exists()
    result = scenescribe.run(clips, tmp_path, options)
    assert not result.failed
    _same(tmp_path, reference)
    # Computed on Ray, reused here. The shots, not the speech: frames start once every video's
    # shots are done, while speech runs beside them and may still be running at the interrupt.
    assert result.videos[0].stages["shots"] == "cached"


def test_options_name_the_executor(tmp_path: Path) -> None:
    assert run_options_from_mapping({"executor": "ray", "address": "auto"}).executor == "ray"
    with pytest.raises(OptionError, match=r"executor \(--executor\): expected one of local, ray"):
        RunOptions(executor="dask")
    with pytest.raises(OptionError, match=r"address \(--address\): expected only with executor"):
        scenescribe.run(tmp_path, tmp_path / "out", RunOptions(address="10.0.0.1:6379"))


def test_cli_checks_the_executor_before_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scenescribe.cli import app

    clip = str(media("synthetic/synthetic_cuts_speech.mp4"))
    for args, message in ((["--executor", "spark"], "expected one of local, ray"),
                          (["--address", "10.0.0.1:6379"], "expected only with executor 'ray'")):
        done = CliRunner().invoke(app, ["run", clip, "--out", str(tmp_path / "out"), *args])
        assert done.exit_code == 2 and message in done.output, done.output
    assert not (tmp_path / "out").exists()


def test_local_run_never_imports_ray(tmp_path: Path) -> None:
    code = ("import sys, scenescribe\n"
            "from scenescribe.options import RunOptions\n"
            f"r = scenescribe.run({str(media('synthetic/synthetic_cuts_speech.mp4'))!r}, "
            f"{str(tmp_path)!r}, RunOptions(stages=(), device='cpu'))\n"
            "assert not r.failed\n"
            "print('ray' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_model_pool_puts_width_actors_on_each_gpu(ray_instance: None) -> None:
    import ray

    from scenescribe.executors.ray_batch import Pool

    pool = Pool(width=2, gpus=2)
    pool.launch(["json"])
    pool.start()
    try:
        assert [len(group) for group in pool.groups] == [2, 2]
        seen = [ray.get([a.group.remote() for a in group]) for group in pool.groups]
        assert seen == [["0", "0"], ["1", "1"]]
    finally:
        pool.stop()


def test_videos_are_shared_by_length() -> None:
    from scenescribe.executors.ray_batch import shares
    from scenescribe.graph import StageOutput, Task, Video
    from scenescribe.records import VideoInfo
    from scenescribe.workspace import WorkFolder

    def task(seconds: float) -> dict[str, Task]:
        info = VideoInfo(path="x.mp4", size_bytes=1, container="mp4", duration=seconds,
                         has_video=True)
        probe = StageOutput("k", False, meta={"info": info})
        return {"speech": Task(Video(Path("x.mp4"), WorkFolder(Path("out"))), "k", {"probe": probe})}

    lengths = [10.0, 300.0, 20.0, 280.0, 30.0]
    split = shares([task(s) for s in lengths], 2)
    assert sorted(i for share in split for i in share) == list(range(5))  # each video once
    assert all(share == sorted(share) for share in split)  # run order kept within a share
    totals = sorted(sum(lengths[i] for i in share) for share in split)
    assert totals == [320.0, 320.0]  # 300+20 and 280+30+10
    assert shares([task(5.0)], 4) == [[0]]  # never an actor without work


def test_bench_reports_throughput_by_gpu_count() -> None:
    from scenescribe.bench_report import _job, job_summary

    job = {"wall_s": 10.0, "model": None, "videos": 2, "stages": [], "load_s": 0.0,
           "compute_s": 8.0, "split_sum_s": 8.0, "overlap_s": -2.0, "cached": [],
           "executor": {"name": "ray", "gpus": 0}}
    stage1 = [{"duration_s": 30.0, "scenes": 7}, {"duration_s": 10.0, "scenes": 3}]
    text = _job(job_summary(job, stage1))
    assert "| ray | 0 | 1.000 | 4.000 |" in text
    assert "the count is 0" in text


def test_an_unreachable_cluster_address_fails_in_seconds() -> None:
    from scenescribe.errors import ConfigError
    from scenescribe.executors.ray import check_reachable

    with socket.socket() as probe:  # a port nothing listens on: bound, then closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"nothing answers at 127.0.0.1:{port}") as err:
        check_reachable(f"127.0.0.1:{port}", timeout=2.0)
    assert time.perf_counter() - start < 3.0 and "\n" not in str(err.value)
    with socket.socket() as server:  # something listening: accepted
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"ray://127.0.0.1:{server.getsockname()[1]}")
    check_reachable("auto")  # left to Ray
