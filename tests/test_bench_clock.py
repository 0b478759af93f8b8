"""The whole job's clock and its per-stage split: each load once, each compute once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scenescribe.bench import job_split
from scenescribe.bench_report import _job, job_summary

# Two videos as `run` reports them: one speech model loaded once, reported by both videos.
TIMINGS = [
    {"shots": {"load_s": 0.0, "compute_s": 2.0, "cached": False},
     "frames": {"load_s": 0.0, "compute_s": 3.0, "cached": False},
     "speech": {"load_s": 10.0, "compute_s": 5.0, "cached": False},
     "captions[m]": {"load_s": 7.0, "compute_s": 4.0, "cached": False}},
    {"shots": {"load_s": 0.0, "compute_s": 1.0, "cached": False},
     "frames": {"load_s": 0.0, "compute_s": 1.5, "cached": False},
     "speech": {"load_s": 10.0, "compute_s": 6.0, "cached": False},
     "captions[m]": {"load_s": 7.0, "compute_s": 2.0, "cached": False}},
]


def test_split_counts_each_load_and_compute_once() -> None:
    job = job_split(TIMINGS, wall_s=40.0, model="m")
    split = {r["stage"]: r for r in job["stages"]}
    assert split["speech"] == {"stage": "speech", "load_s": 10.0, "compute_s": 11.0,
                               "cached": False}
    assert split["frames"]["compute_s"] == 4.5  # frames once: not again in the captions' time
    assert split["captions[m]"]["load_s"] == 7.0 and split["captions[m]"]["compute_s"] == 6.0
    assert job["load_s"] == 17.0
    assert job["compute_s"] == pytest.approx(3.0 + 4.5 + 11.0 + 6.0)
    assert job["split_sum_s"] == pytest.approx(41.5)
    assert job["overlap_s"] == pytest.approx(1.5)  # side by side: the split exceeds the clock
    assert job["wall_s"] == 40.0 and job["cached"] == [] and job["videos"] == 2


def test_cached_stage_marks_the_job_as_partial() -> None:
    timings = [dict(v) for v in TIMINGS]
    for video in timings:
        video["speech"] = {**video["speech"], "cached": True, "load_s": 0.0, "compute_s": 0.0}
    timings[1]["shots"] = {**timings[1]["shots"], "cached": True}  # cached for one video only
    job = job_split(timings, wall_s=12.0, model=None)
    assert job["cached"] == ["speech"]
    stage1 = [{"duration_s": 60.0, "scenes": 5}, {"duration_s": 40.0, "scenes": 3}]
    summary = job_summary(job, stage1)
    assert summary is not None
    assert summary["video_s"] == 100.0 and summary["scenes"] == 8
    assert summary["rtf"] == pytest.approx(0.12)
    text = _job(summary)
    assert "Not a full job" in text and "speech" in text and "Stage 1 only" in text
    assert "**12.0 s**" in text


def test_report_without_a_job() -> None:
    assert job_summary(None, []) is None
    assert "Not measured" in _job(None)


def test_spans_place_each_stage_and_say_when_stage1_was_done() -> None:
    spans = {"probe": (0.5, 1.0), "shots": (1.0, 9.0), "speech": (1.0, 14.0),
             "frames": (9.0, 12.0), "captions[m]": (12.0, 39.0)}
    job = job_split(TIMINGS, wall_s=40.0, model="m", spans=spans)
    split = {r["stage"]: r for r in job["stages"]}
    assert (split["frames"]["from_s"], split["frames"]["to_s"]) == (9.0, 12.0)
    assert job["stage1_wall_s"] == 14.0  # speech ends last; the captions are not Stage 1
    stage1 = [{"duration_s": 60.0, "scenes": 5}]
    summary = job_summary(job, stage1)
    assert summary is not None
    assert "done at **14.0 s**" in _job(summary)
    assert job_split(TIMINGS, wall_s=40.0, model="m")["stage1_wall_s"] is None


def test_each_videos_outcomes_are_placed_on_the_job_clock() -> None:
    """``RunContext.report`` notes when each video's outcome came; the bench shows it in order."""
    from scenescribe.graph import RunContext, StageOutput, Video
    from scenescribe.progress import NullProgress
    from scenescribe.workspace import WorkFolder

    ctx = RunContext(NullProgress())
    video = Video(Path("/videos/a.mp4"), WorkFolder(Path("/out/a")))
    before = time.perf_counter()
    ctx.report(video, {"frames": StageOutput("k", False)})
    ctx.report(video, {"shots": StageOutput("k", False)})
    done = ctx.finished["/videos/a.mp4"]
    assert before <= done["frames"] <= done["shots"] <= time.perf_counter()
    job = job_split(TIMINGS, wall_s=40.0, model="m",
                    finished={"a.mp4": {"frames": 12.0, "shots": 9.0}})
    assert list(job["videos_done_s"]["a.mp4"].items()) == [("shots", 9.0), ("frames", 12.0)]
    assert job_split(TIMINGS, wall_s=40.0, model="m")["videos_done_s"] == {}


def test_the_split_adds_up_where_a_stage_says_its_compute_went() -> None:
    timings = [{"captions[m]": {"compute_s": 3.0, "generate_s": 2.5, "prepare_wait_s": 0.2}},
               {"captions[m]": {"compute_s": 1.0, "generate_s": 0.5, "prepare_wait_s": 0.4}},
               {"speech": {"compute_s": 1.0, "audio_read_s": 0.7}}]
    split = {r["stage"]: r for r in job_split(timings, wall_s=9.0, model="m")["stages"]}
    assert split["captions[m]"]["generate_s"] == pytest.approx(3.0)
    assert split["captions[m]"]["prepare_wait_s"] == pytest.approx(0.6)
    assert split["speech"]["audio_read_s"] == pytest.approx(0.7)
    assert "generate_s" not in split["speech"]
