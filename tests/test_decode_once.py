"""Decode once in the stage graph: frames and objects fused into one node, one pass per video,
each part with its own key, checkpoint and status (fake backends; the tracker decodes real
frames from the clip)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import scenescribe
from fake_media import make_clip
from fake_setup import fake_options
from scenescribe import media, sampling
from scenescribe.graph import Failure, RunContext, StageOutput, Video
from scenescribe.options import RunOptions
from scenescribe.pipeline import _preflight, plan
from scenescribe.progress import NullProgress
from scenescribe.scheduler import run_graph
from scenescribe.stage2 import model_specs
from scenescribe.testing import fakes
from scenescribe.workspace import WorkFolder


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    fakes.reset()
    return make_clip(tmp_path / "in" / "clip.mp4")


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Decode passes started, by the frames stage alone or by a shared pass."""
    started: list[int] = []

    def counting(real: Any) -> Any:
        def decode_pass(*args: Any, **kwargs: Any) -> Iterator[Any]:
            started.append(1)
            return real(*args, **kwargs)  # type: ignore[no-any-return]
        return decode_pass

    for module in (sampling, media.shared, fakes):
        monkeypatch.setattr(module, "decode_pass", counting(module.decode_pass))
    return started


def shared(tracker: str = "fake-objects-shared", *models: str, **objects: Any) -> RunOptions:
    options = fake_options(*models, grounding=True)
    return replace(options, objects=replace(options.objects, backend=tracker, **objects))


def run_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "clip" / "run.json").read_text())  # type: ignore[no-any-return]


def status(out: Path) -> dict[str, str]:
    return {name: s["status"] for name, s in run_json(out)["stages"].items()}


def test_plan_fuses_only_a_tracker_that_shares_its_decode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    options = shared("fake-objects-shared", "fake-vlm-a")
    # Frames first (the default): two nodes, the tracker after the frames, so ungrounded
    # captioners (which read only the frames) start while it runs.
    graph = plan(options, _preflight(options, "cpu", None), model_specs(options.captions.models),
                 "cpu", None, RunContext(NullProgress()))
    assert [[n.name for n in level] for level in graph.levels()] == [
        ["probe"], ["shots", "speech"], ["frames", "transcript", "sounds"], ["objects"],
        ["captions[fake-vlm-a]"]]  # grounded: it reads the objects
    assert graph.stages["objects"].after == ("frames",)
    stage1 = shared()  # no captioner waits for the JPEGs: the tracker starts on the shots
    graph = plan(stage1, _preflight(stage1, "cpu", None), [], "cpu", None,
                 RunContext(NullProgress()))
    assert graph.stages["objects"].after == () and [n.name for n in graph.levels()[2]] == [
        "frames", "transcript", "sounds", "objects"]
    monkeypatch.setenv("SCENESCRIBE_DECODE_ONCE", "1")
    graph = plan(options, _preflight(options, "cpu", None), model_specs(options.captions.models),
                 "cpu", None, RunContext(NullProgress()))
    assert [[n.name for n in level] for level in graph.levels()] == [
        ["probe"], ["shots", "speech"], ["transcript", "sounds", "frames+objects"],
        ["captions[fake-vlm-a]"]]
    assert graph.stages["frames"].field == "frames" and graph.stages["objects"].field == "objects"
    assert "objects" in graph.stages["captions[fake-vlm-a]"].inputs  # grounding still sees it
    plain = fake_options("fake-vlm-a")  # FakeObjects decodes nothing: no fusion
    graph = plan(plain, _preflight(plain, "cpu", None), model_specs(plain.captions.models),
                 "cpu", None, RunContext(NullProgress()))
    # Ungrounded: no captioner reads the sounds or objects, so both wait for the frames.
    assert [[n.name for n in level] for level in graph.levels()[2:]] == [
        ["frames", "transcript"], ["sounds", "objects", "captions[fake-vlm-a]"]]


def test_one_pass_feeds_both_and_each_part_keeps_its_own_status(
        clip: Path, tmp_path: Path, passes: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESCRIBE_DECODE_ONCE", "1")
    out = tmp_path / "out"
    first = scenescribe.run(clip, out, shared())
    assert not first.failed and len(passes) == 1  # one pass for the JPEGs and the tracker
    assert status(out) == dict.fromkeys(["probe", "shots", "frames", "objects", "speech",
                                         "transcript", "sounds"], "computed")
    records = [json.loads(x) for x in (out / "clip" / "scenes.jsonl").read_text().splitlines()]
    assert len(records) == fakes.CALLS["fake-objects-shared"] == 4
    assert all(r["frames"] and r["objects"][0]["label"].startswith("shade ") for r in records)
    assert len({r["objects"][0]["label"] for r in records}) > 1  # real, different frames
    keys = {name: s["key"] for name, s in run_json(out)["stages"].items()}
    timings = run_json(out)["timings"]
    assert timings["objects"]["backend"] == "fake-objects-shared"
    assert run_json(out)["models"]["objects"]["name"] == "fake-objects-shared"

    # The frames key is the unfused frames stage's key: the same JPEGs serve either plan.
    apart = scenescribe.run(clip, tmp_path / "apart", fake_options())
    assert run_json(tmp_path / "apart")["stages"]["frames"]["key"] == keys["frames"]
    assert not apart.failed

    fakes.reset()
    passes.clear()
    again = scenescribe.run(clip, out, shared())
    assert set(again.videos[0].stages.values()) == {"cached"} and not passes and not fakes.CALLS

    # Only the tracker's options changed: frames cached, the tracker runs alone on a pass.
    changed = scenescribe.run(clip, out, shared(confidence=0.5))
    assert changed.videos[0].stages["frames"] == "cached"
    assert changed.videos[0].stages["objects"] == "computed" and len(passes) == 1
    assert run_json(out)["stages"]["objects"]["key"] != keys["objects"]
    assert run_json(out)["stages"]["frames"]["key"] == keys["frames"]

    # A deleted JPEG: that scene's frames are sampled again; the objects stay cached.
    jpegs = sorted((out / "clip" / "frames").glob("*.jpg"))
    jpegs[0].unlink()
    fakes.reset()
    resampled = scenescribe.run(clip, out, shared(confidence=0.5))
    assert resampled.videos[0].stages["frames"] == "computed"
    assert resampled.videos[0].stages["objects"] == "cached" and not fakes.CALLS
    assert sorted((out / "clip" / "frames").glob("*.jpg")) == jpegs


def test_a_tracker_crash_fails_objects_and_keeps_the_frames(clip: Path, tmp_path: Path) -> None:
    options = shared("fake-objects-crash")
    graph = plan(options, _preflight(options, "cpu", None), [], "cpu", None,
                 RunContext(NullProgress()))
    folder = WorkFolder(tmp_path / "out" / "clip")
    folder.make()
    outcomes = run_graph(graph, [Video(clip, folder)], RunContext(NullProgress()), False)[0]
    frames, objects = outcomes["frames"], outcomes["objects"]
    assert isinstance(frames, StageOutput) and len(frames.lines) == 4 and not frames.cached
    assert folder.stage_file("frames", frames.key).is_file()  # its checkpoint finished
    assert isinstance(objects, Failure)
    assert objects.reason == f"{clip}: objects: internal error: RuntimeError: tracker fell over"
    assert isinstance(outcomes["speech"], StageOutput)  # run before it, as without fusion


# ---------------------------------------------------------------- a consumer that falls behind

def _key(picks: Any) -> list[tuple[int, float, float, int]]:
    return [(p.request, p.time, p.frame.time, int(p.frame.image.sum())) for p in picks]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_slow_consumer_spills_and_a_follow_up_pass_serves_the_rest(tmp_path: Path,
                                                                       workers: int) -> None:
    """The tracker's feed holds 3 picks and its reader is slow: the pass stops serving it and
    ends the JPEG feed at decode speed; the tracker then gets exactly what a pass of its own
    gives (ticks finer than the frame rate, so one frame covers several; shown midpoints)."""
    import time

    from scenescribe.media import SHOWN, TICK, FrameRequest, SharedPass, decode_pass

    clip = make_clip(tmp_path / "long.mp4", seconds=24, fps=10)
    jpegs = [FrameRequest((0.5, 1.25, 2.0), SHOWN, short_side=16)]
    tracker = [FrameRequest((1.05, 3.33, 20.5), SHOWN, short_side=24),
               FrameRequest(tuple(i * 0.04 for i in range(600)), TICK, short_side=24)]
    alone = _key(decode_pass(clip, tracker, workers=1))
    shared = SharedPass(clip, workers=workers)
    first = shared.subscribe(jpegs)
    second = shared.subscribe(tracker, depth=3, spill=True)
    shared.start()
    try:
        got_first = _key(first)  # ends once its 3 picks are in, not at the end of the video
        assert not second.spilled.is_set() or second.missed_from is not None
        got_second = []
        for pick in second:
            got_second.extend(_key([pick]))
            time.sleep(0.005)
    finally:
        shared.close()
    assert got_first == _key(decode_pass(clip, jpegs, workers=1))
    assert second.spilled.is_set() and second.missed_from is not None
    assert got_second == alone and len(alone) > 240  # every 10 fps frame once, in order


def test_an_unhurried_consumer_is_served_by_the_one_pass(tmp_path: Path,
                                                         passes: list[int]) -> None:
    from scenescribe.media import TICK, FrameRequest, SharedPass, decode_pass

    clip = make_clip(tmp_path / "c.mp4", seconds=4, fps=10)
    tracker = [FrameRequest(tuple(i * 0.5 for i in range(8)), TICK, short_side=16)]
    shared = SharedPass(clip, workers=1)
    feed = shared.subscribe(tracker, depth=64, spill=True)
    shared.start()
    try:
        got = _key(feed)
    finally:
        shared.close()
    assert len(passes) == 1 and not feed.spilled.is_set()  # no follow-up pass
    assert got == _key(decode_pass(clip, tracker, workers=1))


@pytest.mark.parametrize("once", ["1", "0"])
def test_videos_side_by_side_give_what_one_at_a_time_gives(tmp_path: Path, passes: list[int],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           once: str) -> None:
    """Side by side or one at a time, frames first or one shared pass: the same records."""
    import threading

    monkeypatch.setenv("SCENESCRIBE_DECODE_ONCE", once)

    clips = [make_clip(tmp_path / "in" / f"clip{i}.mp4", seconds=3 + i) for i in range(3)]
    records = {}
    names: set[str] = set()  # threads that ran a video's pass
    real = sampling.sample_and_track

    def noting(*args: Any, **kwargs: Any) -> Any:
        names.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr("scenescribe.fused.sample_and_track", noting)
    for side_by_side in ("1", "2"):
        monkeypatch.setenv("SCENESCRIBE_VIDEO_PASSES", side_by_side)
        fakes.reset()
        passes.clear()
        names.clear()
        out = tmp_path / f"out{side_by_side}"
        result = scenescribe.run(clips, out, shared())
        # One pass per video, or the frames' own and the tracker's
        assert not result.failed and len(passes) == (3 if once == "1" else 6)
        if once == "1":  # the fused node's passes: one thread, or a pool's threads
            assert len(names) == 1 if side_by_side == "1" else len(names) >= 2
        else:  # frames first: the frames and objects nodes each decode on their own
            assert not names
        records[side_by_side] = {
            c.stem: [(r["frames"], r["objects"]) for r in map(
                json.loads, (out / c.stem / "scenes.jsonl").read_text().splitlines())]
            for c in clips}
    assert records["1"] == records["2"] and all(records["1"].values())
    if once == "0":  # the JPEGs and the shades the tracker saw come out as with one pass
        monkeypatch.setenv("SCENESCRIBE_DECODE_ONCE", "1")
        scenescribe.run(clips, tmp_path / "once", shared())
        assert records["1"] == {c.stem: [(r["frames"], r["objects"]) for r in map(
            json.loads, (tmp_path / "once" / c.stem / "scenes.jsonl").read_text().splitlines())]
            for c in clips}
