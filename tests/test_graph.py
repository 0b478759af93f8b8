"""The stage graph's invariants, through the real pipeline with fake backends (no model files)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import scenescribe
from fake_media import make_clip
from fake_setup import fake_options
from scenescribe.errors import ConfigError
from scenescribe.graph import (
    Failure,
    Graph,
    Milestone,
    Outcome,
    RunContext,
    Stage,
    StageOutput,
    Task,
    Video,
)
from scenescribe.pipeline import _preflight, plan
from scenescribe.progress import NullProgress
from scenescribe.scheduler import run_graph
from scenescribe.stage2 import ModelSpec, model_specs
from scenescribe.testing import fakes
from scenescribe.workspace import WorkFolder

STAGE1 = ("probe", "shots", "frames", "speech", "transcript", "sounds", "detections", "objects")


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    fakes.reset()
    return make_clip(tmp_path / "in" / "clip.mp4")


def stages_in_run_json(out: Path) -> dict[str, str]:
    facts = json.loads((out / "clip" / "run.json").read_text())
    return {name: s["status"] for name, s in facts["stages"].items()}


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "clip" / "scenes.jsonl").read_text().splitlines()]


def test_adding_a_captioner_recomputes_nothing_else(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = scenescribe.run(clip, out, fake_options("fake-vlm-a"))
    assert not first.failed and fakes.CALLS["fake-vlm-a"] == 4
    assert set(stages_in_run_json(out).values()) == {"computed"}
    fakes.reset()
    second = scenescribe.run(clip, out, fake_options("fake-vlm-a", "fake-vlm-b"))
    assert not second.failed
    assert fakes.CALLS == {"fake-vlm-b": 4}  # nothing of A, nothing of Stage 1
    assert fakes.LOADS == {"fake-vlm-b": 1}
    want = {**dict.fromkeys(STAGE1, "cached"), "captions[fake-vlm-a]": "cached",
            "captions[fake-vlm-b]": "computed"}
    assert stages_in_run_json(out) == want == second.videos[0].stages
    assert all(set(r["captions"]) == {"fake-vlm-a", "fake-vlm-b"} for r in records(out))
    models = json.loads((out / "clip" / "run.json").read_text())["models"]
    for model in ("fake-vlm-a", "fake-vlm-b"):  # decoding known for reused captions too
        assert models[f"captions[{model}]"]["decoding"] == {"do_sample": False,
                                                           "max_new_tokens": 256}
        assert models[f"captions[{model}]"]["name"] == model
    # A run with B alone still writes A's captions: they were made from the same inputs.
    third = scenescribe.run(clip, out, fake_options("fake-vlm-b"))
    assert set(third.videos[0].stages.values()) == {"cached"}
    assert all(set(r["captions"]) == {"fake-vlm-a", "fake-vlm-b"} for r in records(out))


def test_the_frames_timing_says_where_its_thread_waited(clip: Path, tmp_path: Path) -> None:
    result = scenescribe.run(clip, tmp_path / "out", fake_options("fake-vlm-a"))
    timing = result.videos[0].timings["frames"]
    waited = timing["decode_wait_s"] + timing["write_wait_s"]
    assert timing["decode_wait_s"] > 0 and timing["write_wait_s"] >= 0
    assert waited <= timing["compute_s"] + 1e-3  # parts of the stage's own seconds


@pytest.mark.parametrize("damage", ["cut off", "emptied", "deleted"])
def test_a_damaged_frame_is_sampled_again(clip: Path, tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    assert not scenescribe.run(clip, out, fake_options("fake-vlm-a")).failed
    jpeg = sorted((out / "clip" / "frames").glob("*.jpg"))[1]
    whole = jpeg.read_bytes()
    if damage == "deleted":
        jpeg.unlink()
    else:
        jpeg.write_bytes(whole[: len(whole) // 2] if damage == "cut off" else b"")
    fakes.reset()
    again = scenescribe.run(clip, out, fake_options("fake-vlm-a"))
    assert not again.failed
    assert jpeg.read_bytes() == whole  # the same frame, saved whole again
    stages = stages_in_run_json(out)
    assert stages["frames"] == "computed"
    assert stages["shots"] == stages["captions[fake-vlm-a]"] == "cached"


def test_speed_only_settings_are_not_in_keys(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    slow = fake_options("fake-vlm-a", batch_size=1, api_concurrency=1, cache="dynamic")
    slow = replace(slow, shots=replace(slow.shots, workers=1, threads=1),
                   speech=replace(slow.speech, batch_size=1, api_concurrency=1))
    assert not scenescribe.run(clip, out, slow).failed
    fast = fake_options("fake-vlm-a", batch_size=16, api_concurrency=32, cache="static",
                        use_cache=False)
    fast = replace(fast, shots=replace(fast.shots, workers=8, threads=4),
                   speech=replace(fast.speech, batch_size=64, api_concurrency=9), parallel=True)
    fakes.reset()
    again = scenescribe.run(clip, out, fast)
    assert set(again.videos[0].stages.values()) == {"cached"} and not fakes.CALLS
    # An option that changes the text does change the key.
    longer = replace(fast, captions=replace(fast.captions, max_new_tokens=99))
    assert scenescribe.run(clip, out, longer).videos[0].stages["captions[fake-vlm-a]"] == "computed"


@pytest.mark.parametrize(("section", "other"), [("speech", "fake-speech-b"),
                                                ("sounds", "fake-sounds-b")])
def test_grounded_captions_follow_their_inputs(clip: Path, tmp_path: Path, section: str,
                                               other: str) -> None:
    out = tmp_path / "out"
    grounded = fake_options("fake-vlm-a", grounding=True)
    assert not scenescribe.run(clip, out, grounded).failed
    fakes.reset()
    changed = replace(grounded, **{section: replace(getattr(grounded, section), backend=other)})
    result = scenescribe.run(clip, out, changed)
    assert result.videos[0].stages[section] == "computed"
    assert result.videos[0].stages["captions[fake-vlm-a]"] == "computed"
    assert fakes.CALLS["fake-vlm-a"] == 4
    assert all(other in context for context in fakes.CONTEXTS["fake-vlm-a"])
    assert all(other in r["captions"]["fake-vlm-a"]["text"] for r in records(out))


def test_ungrounded_captions_ignore_stage1_components(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    plain = fake_options("fake-vlm-a")
    assert not scenescribe.run(clip, out, plain).failed
    changed = replace(plain, speech=replace(plain.speech, backend="fake-speech-b"))
    fakes.reset()
    result = scenescribe.run(clip, out, changed)
    assert result.videos[0].stages["captions[fake-vlm-a]"] == "cached"
    assert fakes.CALLS == {"fake-speech-b": 1}


def test_new_shots_rejoin_the_words_without_transcribing_again(clip: Path, tmp_path: Path) -> None:
    """Speech is keyed on the file and the recognizer only: other cuts re-split the same words."""
    out = tmp_path / "out"
    first = fake_options()
    assert not scenescribe.run(clip, out, first).failed
    before = records(out)
    fakes.reset()
    longer = replace(first, shots=replace(first.shots, min_scene_len=1.5))
    result = scenescribe.run(clip, out, longer)
    stages = result.videos[0].stages
    assert stages["speech"] == "cached" and "fake-speech" not in fakes.CALLS
    assert stages["shots"] == stages["transcript"] == "computed"
    after = records(out)
    assert len(after) < len(before)  # fewer, longer scenes ...
    words = [w for r in before for w in r["transcript"]["words"]]
    assert [w for r in after for w in r["transcript"]["words"]] == words  # ... the same words
    for record in after:
        start, end = record["start"], record["end"]
        assert all(start <= (w["start"] + w["end"]) / 2 < end for w in record["transcript"]["words"])


def test_stale_grounded_captions_of_an_absent_model_are_dropped(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not scenescribe.run(clip, out, fake_options("fake-vlm-a", grounding=True)).failed
    changed = fake_options("fake-vlm-b", grounding=True)
    changed = replace(changed, speech=replace(changed.speech, backend="fake-speech-b"))
    assert not scenescribe.run(clip, out, changed).failed
    assert all(set(r["captions"]) == {"fake-vlm-b"} for r in records(out))


def test_plan_shape(tmp_path: Path) -> None:
    options = fake_options("fake-vlm-a", "fake-vlm-b", grounding=True)
    graph = plan(options, _preflight(options, "cpu", None), model_specs(options.captions.models),
                 "cpu", None, RunContext(NullProgress()))
    names = [[s.name for s in level] for level in graph.levels()]
    # Speech needs only the probe: the model runs beside shot detection; the cheap join onto
    # scenes (the records' transcript) comes after the shots. The object detector needs only the
    # probe too (new cuts reuse its boxes) but follows the shots' decode (the cores are theirs
    # first; it reads the frames that decode kept).
    assert names == [["probe"], ["shots", "speech"],
                     ["detections", "frames", "transcript", "sounds"], ["objects"],
                     ["captions[fake-vlm-a]", "captions[fake-vlm-b]"]]
    assert graph.stages["speech"].inputs == ("probe",) and graph.stages["shots"].concurrent
    assert graph.stages["detections"].inputs == ("probe",)
    assert graph.stages["detections"].after == (Milestone("shots", "spooled"),)
    assert graph.stages["shots"].milestones == ("decoded", "spooled")
    assert graph.stages["objects"].inputs == ("probe", "shots", "detections")
    caption = graph.stages["captions[fake-vlm-a]"]
    assert set(caption.inputs) == {"probe", "shots", "frames", "transcript", "sounds", "objects"}
    assert caption.field == "captions" and graph.stages["transcript"].field == "transcript"
    # Per video as soon as its inputs are: all but the probe, the shots and the pooled speech.
    assert [n for n, s in graph.stages.items() if not s.waves] == ["probe", "shots", "speech"]
    ungrounded = fake_options("fake-vlm-a")
    graph = plan(ungrounded, _preflight(ungrounded, "cpu", None), [ModelSpec("fake-vlm-a")],
                 "cpu", None, RunContext(NullProgress()))
    assert set(graph.stages["captions[fake-vlm-a]"].inputs) == {"probe", "shots", "frames"}
    # What no captioner reads waits for the frames the captioners do: the JPEGs get the cores.
    # Tracking (the detector ran beside the shots) and the transcript cost no cores to speak of.
    assert graph.stages["sounds"].after == ("frames",) and graph.stages["objects"].after == (
        ) and graph.stages["transcript"].after == ()
    stage1_only = fake_options()
    graph = plan(stage1_only, _preflight(stage1_only, "cpu", None), [], "cpu", None,
                 RunContext(NullProgress()))
    # Nothing waits for the frames: the components start on each video's shots.
    assert graph.stages["sounds"].after == () and graph.stages["objects"].after == ()
    with pytest.raises(ValueError, match="needs"):
        Graph([graph.stages["shots"]])  # its input, the probe, is not planned


def test_side_by_side_matches_sequential(clip: Path, tmp_path: Path) -> None:
    """Side by side, stages run per group of ready videos (waves): the same records."""
    make_clip(clip.parent / "longer.mp4", seconds=7)
    got = {}
    for parallel in (False, True):
        options = replace(fake_options("fake-vlm-a", grounding=True), parallel=parallel)
        assert not scenescribe.run(clip.parent, tmp_path / str(parallel), options).failed
        got[parallel] = [(tmp_path / str(parallel) / name / "scenes.jsonl").read_text()
                         for name in ("clip", "longer")]
    assert got[True] == got[False] and got[True][0] != got[True][1]


def test_model_specs_parsed_once_and_checked_before_work(clip: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelSpec.parse("fake-vlm-a=/w/x=y") == ModelSpec("fake-vlm-a", "/w/x=y")
    assert ModelSpec.parse(" fake-vlm-a ") == ModelSpec("fake-vlm-a")
    for bad in ("=/w", "fake-vlm-a=", ""):
        with pytest.raises(ConfigError):
            ModelSpec.parse(bad)
    with pytest.raises(ConfigError, match="more than once"):
        model_specs(["fake-vlm-a", "fake-vlm-a=/x"])
    with pytest.raises(ConfigError, match="unknown captioner"):
        scenescribe.run(clip, tmp_path / "out", fake_options("no-such-vlm"))
    assert not (tmp_path / "out").exists()  # failed before any folder was made
    calls = []
    real = ModelSpec.parse.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(ModelSpec, "parse", classmethod(
        lambda cls, text: (calls.append(text), real(cls, text))[1]))
    assert not scenescribe.run(clip, tmp_path / "out", fake_options("fake-vlm-a",
                                                                    "fake-vlm-b")).failed
    assert calls == ["fake-vlm-a", "fake-vlm-b"]


def test_bench_config_is_not_overridden_by_cli_defaults(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from scenescribe import bench
    from scenescribe.cli import app

    seen = []

    def fake_bench(videos, out, options, bench_options, progress):  # type: ignore[no-untyped-def]
        seen.append((options, bench_options))
        return {"failed_inputs": [], "rows": []}

    monkeypatch.setattr(bench, "bench", fake_bench)
    monkeypatch.setattr("scenescribe.bench_report.to_markdown", lambda report: "")
    config = tmp_path / "bench.toml"
    config.write_text('[captions]\nmodels = ["fake-vlm-a"]\nmax_new_tokens = 7\nbatch_size = 3\n')
    args = ["bench", str(tmp_path), "--out", str(tmp_path / "b"), "--config", str(config)]
    assert CliRunner().invoke(app, args).exit_code == 0
    options, bench_options = seen[-1]
    assert (options.captions.models, options.captions.max_new_tokens,
            options.captions.batch_size) == (("fake-vlm-a",), 7, 3)
    assert bench_options.models == ("fake-vlm-a",)
    given = [*args, "--max-new-tokens", "5", "--batch-size", "2", "--vlm", "fake-vlm-b",
             "--random-weights"]
    assert CliRunner().invoke(app, given).exit_code == 0
    options, bench_options = seen[-1]
    assert (options.captions.models, options.captions.max_new_tokens, options.captions.batch_size,
            options.captions.min_new_tokens) == (("fake-vlm-b",), 5, 2, 5)
    assert bench_options.models == ("fake-vlm-b",)


class _Toy(Stage):
    """A stage for runner tests: records which inputs it was given, or raises."""

    def __init__(self, name: str, inputs: tuple[str, ...] = (), boom: bool = False,
                 optional: bool = False) -> None:
        self.name, self.inputs, self.boom, self.optional = name, inputs, boom, optional
        self.seen: list[set[str]] = []

    def identity(self) -> dict[str, Any]:
        return {"toy": self.name}

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        if self.boom:
            raise RuntimeError("kaput")
        self.seen += [set(t.inputs) for t in tasks]
        return {i: StageOutput(t.key, False) for i, t in enumerate(tasks)}


def test_runner_gives_only_declared_inputs_and_contains_crashes(tmp_path: Path) -> None:
    root, left = _Toy("root"), _Toy("left", ("root",))
    right = _Toy("right", ("root",))
    joined = _Toy("joined", ("left",))
    optional = _Toy("optional", ("root",), boom=True, optional=True)
    graph = Graph([root, left, right, joined, optional])
    assert [[s.name for s in level] for level in graph.levels()] == [
        ["root"], ["left", "right", "optional"], ["joined"]]
    video = Video(tmp_path / "v.mp4", WorkFolder(tmp_path / "v"))
    ctx = RunContext(NullProgress())
    results = run_graph(graph, [video], ctx, parallel=True)
    assert joined.seen == [{"left"}] and left.seen == [{"root"}]
    assert "optional" not in results[0] and "kaput" in ctx.warnings[0]
    # Keys chain: the same identities and inputs give the same keys, a change upstream does not.
    keys = {n: o.key for n, o in results[0].items() if isinstance(o, StageOutput)}
    assert run_graph(Graph([root, left]), [video], ctx, parallel=False)[0]["left"].key == keys["left"]
    other = _Toy("root")
    other.identity = lambda: {"toy": "changed"}  # type: ignore[method-assign]
    assert run_graph(Graph([other, left]), [video], ctx, parallel=False)[0]["left"].key != keys["left"]
    required = _Toy("required", ("root",), boom=True)
    results = run_graph(Graph([root, required, _Toy("after", ("required",))]), [video], ctx, False)
    assert isinstance(results[0]["required"], Failure) and "after" not in results[0]
    assert "kaput" in results[0]["required"].reason


def test_bench_asks_what_the_caption_stage_asks(clip: Path, tmp_path: Path) -> None:
    from scenescribe.bench import _requests

    out = tmp_path / "out"
    assert not scenescribe.run(clip, out, fake_options("fake-vlm-a", grounding=True)).failed
    requests, total = _requests(out / "clip", 0, grounding=True)
    assert total == 4 and [r.context for r in requests] == fakes.CONTEXTS["fake-vlm-a"]
    assert all("fake-speech" in r.context and len(r.frames) == 2 for r in requests)
    assert [r.context for r in _requests(out / "clip", 2, grounding=False)[0]] == ["", ""]


class _Timed(Stage):
    """A stage that notes when it started and ended (on a shared clock of events)."""

    def __init__(self, name: str, inputs: tuple[str, ...] = (), *, concurrent: bool = True,
                 after: tuple[str, ...] = (), events: list[str], gate: Any = None,
                 wait_for: Any = None) -> None:
        self.name, self.inputs, self.concurrent, self.after = name, inputs, concurrent, after
        self.events, self.gate, self.wait_for = events, gate, wait_for

    def identity(self) -> dict[str, Any]:
        return {"timed": self.name}

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        self.events.append(f"start {self.name}")
        if self.wait_for is not None:  # hold until another stage has started
            assert self.wait_for.wait(5), f"{self.name} waited in vain"
        if self.gate is not None:
            self.gate.set()
        self.events.append(f"end {self.name}")
        return {i: StageOutput(t.key, False) for i, t in enumerate(tasks)}


def test_a_node_starts_once_its_inputs_are_done_not_its_level(tmp_path: Path) -> None:
    """The caption stage reads only the frames: it starts while the tracker (which must follow
    the frames) still runs; two non-concurrent stages never overlap; ``after`` is kept."""
    import threading

    events: list[str] = []
    captions_started = threading.Event()
    root = _Timed("root", events=events)
    frames = _Timed("frames", ("root",), events=events)
    tracker = _Timed("objects", ("root",), after=("frames",), events=events,
                     wait_for=captions_started)  # ends only once the captioner has started
    caption_a = _Timed("captions[a]", ("root", "frames"), concurrent=False, events=events,
                       gate=captions_started)
    caption_b = _Timed("captions[b]", ("root", "frames"), concurrent=False, events=events)
    graph = Graph([root, frames, tracker, caption_a, caption_b])
    video = Video(tmp_path / "v.mp4", WorkFolder(tmp_path / "v"))
    ctx = RunContext(NullProgress())
    results = run_graph(graph, [video], ctx, parallel=True)
    assert all(isinstance(o, StageOutput) for o in results[0].values()) and len(results[0]) == 5
    assert events.index("start objects") > events.index("end frames")  # after the frames
    spans = ctx.spans  # when each ran, as the bench's timeline reports it
    assert set(spans) == {"root", "frames", "objects", "captions[a]", "captions[b]"}
    assert all(start <= end for start, end in spans.values())
    assert spans["root"][1] <= spans["frames"][0] and spans["frames"][1] <= spans["objects"][0]
    assert spans["captions[a]"][0] < spans["objects"][1]  # beside the tracker, on the clock too
    assert events.index("start captions[a]") < events.index("end objects")  # beside the tracker
    a, b = sorted(["captions[a]", "captions[b]"], key=lambda n: events.index(f"start {n}"))
    assert events.index(f"end {a}") < events.index(f"start {b}")  # one captioner at a time
    with pytest.raises(ValueError, match="needs"):
        Graph([root, _Timed("late", ("root",), after=("missing",), events=events)])


def test_a_component_that_allows_it_runs_videos_side_by_side(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``SCENESCRIBE_COMPONENT_VIDEOS=2``: the object detector runs two videos at once (on
    threads of its own) and every video gets its own records, the same as one after the other."""
    import threading

    threads: list[str] = []
    detect = fakes.FakeObjects.detect_frames

    def recording(self: Any, video: Any, ticks: Any, progress: Any, frames: Any = None) -> Any:
        threads.append(threading.current_thread().name)
        return detect(self, video, ticks, progress, frames)

    monkeypatch.setattr(fakes.FakeObjects, "detect_frames", recording)
    monkeypatch.setattr(fakes.FakeObjects, "concurrent_videos", True)
    clips = [make_clip(tmp_path / "in" / f"clip{k}.mp4", seconds=3 + k) for k in range(3)]
    got = {}
    for at_once in ("1", "2"):
        monkeypatch.setenv("SCENESCRIBE_COMPONENT_VIDEOS", at_once)
        out = tmp_path / at_once
        assert not scenescribe.run(clips, out, fake_options()).failed
        got[at_once] = [(out / c.stem / "scenes.jsonl").read_text() for c in clips]
    assert got["1"] == got["2"]
    assert len(set(got["1"])) == 3  # three different videos, not one copied
    assert sum(name.startswith("detections-video") for name in threads) == 3
