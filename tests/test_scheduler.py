"""The scheduler's waves: a node that needs only one video's inputs starts on that video while
the others are still upstream, keeps its model between waves, and holds its turn."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from scenescribe.graph import (
    Failure,
    Graph,
    Milestone,
    Outcome,
    RunContext,
    Stage,
    StageFailed,
    StageOutput,
    Task,
    Video,
    each,
)
from scenescribe.progress import NullProgress
from scenescribe.scheduler import run_graph
from scenescribe.workspace import WorkFolder


class _Upstream(Stage):
    """Finishes its videos one by one, reporting each; waits before the last one until
    ``release`` is set (so what follows must have started on the others by then)."""

    concurrent = True  # as the shots are, beside the speech

    def __init__(self, name: str, release: threading.Event, log: list[str],
                 fail: str = "", cached: bool = False) -> None:
        self.name, self.release, self.log, self.fail = name, release, log, fail
        self.cached = cached

    def identity(self) -> dict[str, Any]:
        return {"upstream": self.name}

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        def one(task: Task) -> StageOutput:
            if task is tasks[-1]:
                assert self.release.wait(10), "nothing downstream started on the first videos"
            self.log.append(f"{self.name} {task.name}")
            if task.name == self.fail:
                raise StageFailed("broken on purpose")
            return StageOutput(task.key, self.cached)
        return each(self.name, tasks, one, ctx)


class _Model(Stage):
    """A waves stage with a model: notes each run's videos, its loads and its closes."""

    waves = True

    def __init__(self, name: str, inputs: tuple[str, ...], log: list[str], *,
                 concurrent: bool = True, started: threading.Event | None = None) -> None:
        self.name, self.inputs, self.log, self.concurrent = name, inputs, log, concurrent
        self.started = started
        self.runs: list[list[str]] = []
        self.loaded = False
        self.loads = self.closes = 0
        self.lock = threading.Lock()  # a preload and a run load once, as CaptionStage's
        self.preloaded = threading.Event()
        self.await_preload = False

    def identity(self) -> dict[str, Any]:
        return {"model": self.name}

    def _load(self, how: str) -> None:
        with self.lock:
            if not self.loaded:
                self.loaded, self.loads = True, self.loads + 1
                self.log.append(f"{self.name} {how}")

    def preload(self) -> None:
        self._load("preload")
        self.preloaded.set()

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        if self.await_preload:  # the preload thread starts first but may be slower to run
            assert self.preloaded.wait(10), "no preload"
        self._load("load")
        self.runs.append([t.name for t in tasks])
        self.log.append(f"{self.name} run {[t.name for t in tasks]}")
        if self.started is not None:
            self.started.set()
        return {i: StageOutput(t.key, False) for i, t in enumerate(tasks)}

    def close(self) -> None:
        self.loaded, self.closes = False, self.closes + 1
        self.log.append(f"{self.name} close")


def _videos(tmp_path: Path, names: Sequence[str]) -> list[Video]:
    return [Video(tmp_path / f"{n}.mp4", WorkFolder(tmp_path / n)) for n in names]


def test_a_waves_node_starts_on_the_first_videos_and_keeps_its_model(tmp_path: Path) -> None:
    log: list[str] = []
    frames_started = threading.Event()
    shots = _Upstream("shots", frames_started, log)
    frames = _Model("frames", ("shots",), log, started=frames_started)
    graph = Graph([shots, frames])
    videos = _videos(tmp_path, ["a", "b", "c"])
    ctx = RunContext(NullProgress())
    results = run_graph(graph, videos, ctx, parallel=True)
    assert all(isinstance(r["frames"], StageOutput) for r in results)
    assert frames.runs[0] != ["a.mp4", "b.mp4", "c.mp4"]  # started before c's shots were done
    assert sorted(v for run in frames.runs for v in run) == ["a.mp4", "b.mp4", "c.mp4"]
    assert log.index("shots c.mp4") < log.index(f"frames run {frames.runs[-1]}")
    assert (frames.loads, frames.closes) == (1, 1) and log[-1] == "frames close"
    (start, end), shots_end = ctx.spans["frames"], ctx.spans["shots"][1]
    assert start < shots_end <= end  # one span from the first wave to the last


def test_a_captioner_holds_its_turn_across_its_waves(tmp_path: Path) -> None:
    log: list[str] = []
    first_wave = threading.Event()
    shots = _Upstream("shots", first_wave, log)
    a = _Model("captions[a]", ("shots",), log, concurrent=False, started=first_wave)
    b = _Model("captions[b]", ("shots",), log, concurrent=False)
    results = run_graph(Graph([shots, a, b]), _videos(tmp_path, ["a", "b"]),
                        RunContext(NullProgress()), parallel=True)
    assert all(set(r) == {"shots", "captions[a]", "captions[b]"} for r in results)
    assert len(a.runs) == 2  # a wave per video: b's shots came after a's first wave
    runs = [line for line in log if " run " in line or "close" in line]
    assert [line.split()[0] for line in runs] == ["captions[a]"] * 3 + ["captions[b]"] * 2


@pytest.mark.parametrize("cached", [False, True])
def test_the_first_captioner_loads_while_stage1_computes(tmp_path: Path, cached: bool) -> None:
    """Once an upstream stage computes a video afresh, the first turn holder's model loads on
    a thread of its own, before its first wave; the second captioner waits for its turn. A run
    whose upstream is all cached preloads nothing (its captions may be cached too)."""
    log: list[str] = []
    first_wave = threading.Event()
    shots = _Upstream("shots", first_wave, log, cached=cached)
    a = _Model("captions[a]", ("shots",), log, concurrent=False, started=first_wave)
    a.await_preload = not cached
    b = _Model("captions[b]", ("shots",), log, concurrent=False)
    run_graph(Graph([shots, a, b]), _videos(tmp_path, ["a", "b"]),
              RunContext(NullProgress()), parallel=True)
    assert (a.loads, b.loads) == (1, 1) and (a.closes, b.closes) == (1, 1)
    assert f"captions[a] {'load' if cached else 'preload'}" in log
    assert "captions[b] load" in log and "captions[b] preload" not in log
    assert log.index("captions[a] close") < log.index("captions[b] load")


def test_a_failed_video_is_never_given_and_the_rest_go_on(tmp_path: Path) -> None:
    log: list[str] = []
    started = threading.Event()
    shots = _Upstream("shots", started, log, fail="a.mp4")
    release = _Model("release", ("shots",), log, started=started)  # b's wave releases c
    frames = _Model("frames", ("shots",), log)
    results = run_graph(Graph([shots, release, frames]), _videos(tmp_path, ["a", "b", "c"]),
                        RunContext(NullProgress()), parallel=True)
    assert isinstance(results[0]["shots"], Failure) and "frames" not in results[0]
    assert [v for run in frames.runs for v in run] == ["b.mp4", "c.mp4"]
    assert frames.closes == 1


@pytest.mark.parametrize("parallel", [False, True])
def test_without_waves_a_node_runs_once_over_every_video(tmp_path: Path, parallel: bool) -> None:
    log: list[str] = []
    release = threading.Event()
    release.set()
    shots = _Upstream("shots", release, log)
    plain = _Model("plain", ("shots",), log)
    plain.waves = False
    run_graph(Graph([shots, plain]), _videos(tmp_path, ["a", "b"]), RunContext(NullProgress()),
              parallel=parallel)
    assert plain.runs == [["a.mp4", "b.mp4"]] and plain.closes == 1


class _Decoder(Stage):
    """Reaches ``decoded`` for each video, then (``hold``) waits to give its outcome until
    the follower has run on that video."""

    concurrent = True
    milestones = ("decoded",)
    DECODED = Milestone("shots", "decoded")

    def __init__(self, log: list[str], follower_ran: dict[str, threading.Event] | None,
                 reach: bool = True) -> None:
        self.name, self.log, self.follower_ran, self.reach = "shots", log, follower_ran, reach

    def identity(self) -> dict[str, Any]:
        return {}

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        def one(task: Task) -> StageOutput:
            if self.reach:
                ctx.reach(task.video, self.DECODED)
            if self.follower_ran is not None:
                assert self.follower_ran[task.name].wait(10), "the follower waited for shots"
            self.log.append(f"shots {task.name}")
            return StageOutput(task.key, False)
        return each(self.name, tasks, one, ctx)


class _Follower(_Model):
    after = (_Decoder.DECODED,)

    def __init__(self, log: list[str]) -> None:
        super().__init__("detections", (), log)
        self.ran = {n: threading.Event() for n in ("a.mp4", "b.mp4")}

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        out = super().run(tasks, ctx)
        for task in tasks:
            self.ran[task.name].set()
        return out


def test_a_stage_after_a_milestone_starts_on_a_video_before_its_outcome(tmp_path: Path) -> None:
    """The decoder holds each video's outcome until the follower has run on it: that can only
    end if the follower starts at the milestone. The milestone's time is kept beside the
    outcomes' (bench's timeline)."""
    log: list[str] = []
    follower = _Follower(log)
    shots = _Decoder(log, follower.ran)
    ctx = RunContext(NullProgress())
    results = run_graph(Graph([shots, follower]), _videos(tmp_path, ["a", "b"]), ctx,
                        parallel=True)
    assert all(isinstance(r["detections"], StageOutput) for r in results)
    assert log.index("detections run ['a.mp4']") < log.index("shots a.mp4")
    done = ctx.finished[str(tmp_path / "a.mp4")]
    assert done["shots:decoded"] <= done["shots"]


@pytest.mark.parametrize("parallel", [False, True])
def test_a_milestone_never_reached_means_waiting_for_the_stage(tmp_path: Path,
                                                               parallel: bool) -> None:
    log: list[str] = []
    follower = _Follower(log)
    shots = _Decoder(log, None, reach=False)
    results = run_graph(Graph([shots, follower]), _videos(tmp_path, ["a", "b"]),
                        RunContext(NullProgress()), parallel=parallel)
    assert all(isinstance(r["detections"], StageOutput) for r in results)
    first_run = next(i for i, line in enumerate(log) if line.startswith("detections run"))
    assert log.index("shots a.mp4") < first_run


def test_a_graph_refuses_a_milestone_its_stage_never_reaches(tmp_path: Path) -> None:
    log: list[str] = []
    follower = _Follower(log)
    follower.after = (Milestone("shots", "scored"),)
    with pytest.raises(ValueError, match="shots:scored"):
        Graph([_Decoder(log, None), follower])
    with pytest.raises(ValueError, match="not planned before"):
        Graph([_Follower(log)])


def test_two_turn_takers_in_a_chain_run_one_after_the_other(tmp_path: Path) -> None:
    """A non-concurrent waves stage keeps its turn until its last video, so a non-concurrent
    stage that reads it starts only then (it can never be left waiting for a turn it holds)."""
    log: list[str] = []
    release = threading.Event()
    release.set()
    shots = _Upstream("shots", release, log)
    first = _Model("first", ("shots",), log, concurrent=False)
    then = _Model("then", ("first",), log, concurrent=False)
    results = run_graph(Graph([shots, first, then]), _videos(tmp_path, ["a", "b"]),
                        RunContext(NullProgress()), parallel=True)
    assert all(isinstance(r["then"], StageOutput) for r in results)
    assert log.index("first close") < log.index(f"then run {then.runs[0]}")


class _Overlapping(_Model):
    """A waves stage whose runs may overlap: the run with the first video holds until the run
    with the last one has started."""

    waves_at_once = 2

    def __init__(self, name: str, inputs: tuple[str, ...], log: list[str],
                 release: threading.Event) -> None:
        super().__init__(name, inputs, log)
        self.release = release
        self.last_started = threading.Event()

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        names = [t.name for t in tasks]
        if "b.mp4" in names:
            self.last_started.set()
        out = super().run(tasks, ctx)
        if "a.mp4" in names:
            self.release.set()  # the upstream may now finish b
            assert self.last_started.wait(10), "the second wave waited for the first"
            self.log.append(f"{self.name} first wave ends")
        return out


def test_a_later_wave_starts_beside_a_running_one_where_the_stage_allows(
        tmp_path: Path) -> None:
    """``waves_at_once`` 2: video b, ready while the wave of video a still runs, starts in a
    wave beside it; the node completes once both are done, its model loaded and closed once."""
    log: list[str] = []
    release = threading.Event()
    shots = _Upstream("shots", release, log)
    objects = _Overlapping("objects", ("shots",), log, release)
    results = run_graph(Graph([shots, objects]), _videos(tmp_path, ["a", "b"]),
                        RunContext(NullProgress()), parallel=True)
    assert all(isinstance(r["objects"], StageOutput) for r in results)
    assert objects.runs == [["a.mp4"], ["b.mp4"]]
    assert log.index("objects run ['b.mp4']") < log.index("objects first wave ends")
    assert (objects.loads, objects.closes) == (1, 1) and log[-1] == "objects close"
