"""Shot detection over time segments in parallel processes gives the cuts of one sequential pass."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import media
from scenescribe import registry
from scenescribe.errors import StageError
from scenescribe.media import iter_frames, probe
from scenescribe.options import ShotOptions
from scenescribe.progress import NullProgress
from scenescribe.shots.segments import Segment, constant_rate, detect_in_segments, plan_segments

CLIPS = ["real/big_buck_bunny_0_30.webm", "synthetic/synthetic_cuts_speech.mp4"]


def make(backend: str, workers: int = 1) -> Any:
    detector = registry.create(backend, "shots", options=ShotOptions(backend, workers=workers))
    detector.load()
    return detector


def test_plan_segments_cover_the_video_in_equal_spans() -> None:
    assert plan_segments(30.0, 8) == plan_segments(7200.0, 1) == [Segment(0.0, math.inf)]
    spans = plan_segments(7200.0, 4)
    assert [s.start for s in spans] == [0.0, 1800.0, 3600.0, 5400.0]
    assert [s.end for s in spans] == [1800.0, 3600.0, 5400.0, math.inf]
    assert len(plan_segments(150.0, 16)) == 7  # never under 20 s each
    assert len(plan_segments(30.0, 16, min_seconds=4.0)) == 7


def test_iter_frames_span_matches_the_full_decode() -> None:
    path = media(CLIPS[1])
    full = [(f.index, f.time) for f in iter_frames(path, width=64) if 10.0 <= f.time < 12.5]
    part = [(f.index, f.time) for f in iter_frames(path, width=64, start=10.0, end=12.5)]
    assert part == full and len(full) > 40


@pytest.mark.parametrize("backend", ["adaptive", "content", "hsvcut"])
@pytest.mark.parametrize("clip", CLIPS)
def test_segments_give_the_sequential_cuts(backend: str, clip: str) -> None:
    info = probe(media(clip))
    sequential = make(backend).detect(info, NullProgress())
    # 6 s segments put boundaries near cuts; every one must be stitched exactly.
    segments = plan_segments(info.duration, 16, min_seconds=6.0)
    assert len(segments) >= 4
    assert detect_in_segments(make(backend), info, segments, NullProgress()) == sequential


@pytest.mark.parametrize("backend", ["adaptive", "hsvcut"])
def test_long_file_in_four_segments_finds_all_cuts(backend: str) -> None:
    info = probe(media("bad_inputs/long_64x36_1fps.mp4"))
    cuts = make(backend, workers=4).detect(info, NullProgress())  # 2 h: four 30-min spans
    assert [round(c.time) for c in cuts] == list(range(60, 7200, 60))
    assert cuts == make(backend, workers=1).detect(info, NullProgress())


def test_speed_options_stay_out_of_the_cache_key() -> None:
    assert make("adaptive", workers=1).cache_key() == make("adaptive", workers=8).cache_key()


def test_variable_frame_rate_is_not_split() -> None:
    info = probe(media(CLIPS[1]))
    assert constant_rate(info)
    assert not constant_rate(replace(info, num_frames=info.num_frames // 2))


def test_a_failing_segment_names_the_file(tmp_path: Path) -> None:
    info = probe(media(CLIPS[1]))
    gone = tmp_path / "gone.mp4"
    with pytest.raises(StageError, match="gone.mp4: shot detection of 0-inf s failed"):
        detect_in_segments(make("adaptive"), replace(info, path=gone),
                           [Segment(0.0, math.inf)], NullProgress())
