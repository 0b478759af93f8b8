"""The W1 suite builder (scripts/make_w1_suite.py): the --small suite is built once into a temp
folder and checked against its own ground truth, the reference shape and a second build."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conftest import ROOT, media
from scenescribe.media import decode_audio, iter_frames, probe

MEDIA = media("real").parent


@pytest.fixture(scope="module")
def w1() -> ModuleType:
    path = ROOT / "scripts" / "make_w1_suite.py"
    spec = importlib.util.spec_from_file_location("make_w1_suite", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_suite(w1: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return w1.build(tmp_path_factory.mktemp("w1s"), MEDIA, small=True)


def _gt(video: Path) -> dict:
    return json.loads(video.with_suffix(".gt.json").read_text())


def test_full_suite_plan_has_the_reference_shape(w1: ModuleType) -> None:
    """Planning alone (no encoding): the four reference durations and scene counts, exactly."""
    assert [(s.duration_s, s.scenes) for s in w1.FULL] == [(459, 75), (168, 35), (273, 22),
                                                          (328, 59)]
    clips = w1.discover_clips(MEDIA)
    for spec in w1.FULL:
        shots = w1.plan_shots(spec, clips, w1.Rng(spec.seed), 30.0)
        _check_shots(shots, spec.duration_s * 30, spec.scenes)
        for a, b in itertools.pairwise(shots):
            assert a.family != b.family  # consecutive shots never share a source family
        for s in shots:
            if s.family in ("bbb", "car", "person"):  # a segment never spans a source cut
                lo, hi = s.segment
                assert lo <= s.source_start_s
                assert s.source_start_s + s.n_frames / 30 * s.speed <= hi + 1e-3


def _check_shots(shots: list, total_frames: int, scenes: int) -> None:
    assert len(shots) == scenes
    assert shots[0].start_frame == 0
    for a, b in itertools.pairwise(shots):
        assert b.start_frame == a.start_frame + a.n_frames
    assert shots[-1].start_frame + shots[-1].n_frames == total_frames
    assert min(s.n_frames for s in shots) >= 60  # every scene at least 2 s at 30 fps


def test_small_suite_format_and_ground_truth(w1: ModuleType, small_suite: list[Path]) -> None:
    assert [p.stem for p in small_suite] == [s.name for s in w1.SMALL]
    families = {s["family"] for p in small_suite for s in _gt(p)["shots"]}
    assert families == set(w1.FAMILIES)  # real clips of every kind and generated patterns
    for spec, video in zip(w1.SMALL, small_suite, strict=True):
        info, gt = probe(video), _gt(video)
        assert (info.width, info.height, info.fps, info.video_codec) == (640, 360, 30.0, "h264")
        assert info.duration == pytest.approx(spec.duration_s, abs=0.04)
        assert info.num_frames == spec.duration_s * 30 == gt["video"]["n_frames"]
        (audio,) = info.audio_streams
        assert (audio.codec, audio.sample_rate, audio.channels) == ("aac", 48000, 2)
        assert len(gt["shots"]) == spec.scenes == len(gt["cuts"]) + 1
        for cut, shot in zip(gt["cuts"], gt["shots"][1:], strict=True):
            assert cut["frame"] == shot["start_frame"] == gt["shots"][cut["from_shot"]][
                "end_frame"] + 1
            assert cut["time_s"] == pytest.approx(cut["frame"] / 30, abs=1e-4)
        ends = [0.0] + [t["end_s"] for t in gt["transcript"]]
        for prev_end, row in zip(ends, gt["transcript"], strict=False):
            assert prev_end <= row["start_s"] < row["end_s"] <= spec.duration_s
            assert row["text"]
        assert len(gt["transcript"]) >= 3


def test_cuts_are_the_only_hard_cuts(small_suite: list[Path]) -> None:
    """At every GT cut the picture changes far more than anywhere inside a shot."""
    for video in small_suite:
        cuts = [c["frame"] for c in _gt(video)["cuts"]]
        images = [f.image.astype(np.int16) for f in iter_frames(video, width=96)]
        diff = np.array([np.abs(b - a).mean() for a, b in itertools.pairwise(images)])
        at_cuts = diff[np.array(cuts) - 1]
        inside = np.delete(diff, np.array(cuts) - 1)
        assert at_cuts.min() > 2 * inside.max(), (video.name, at_cuts, inside.max())


def test_speech_is_where_the_ground_truth_puts_it(small_suite: list[Path]) -> None:
    for video in small_suite:
        samples = decode_audio(video, 16_000)
        speech = np.zeros(len(samples), bool)
        for row in _gt(video)["transcript"]:
            speech[int(row["start_s"] * 16_000):int(row["end_s"] * 16_000)] = True
        loud_speech = 10 * np.log10(np.mean(samples[speech] ** 2))
        background = 10 * np.log10(np.mean(samples[~speech] ** 2))
        assert loud_speech > background + 10, (video.name, loud_speech, background)


def test_rebuild_gives_same_ground_truth_and_frames(
        w1: ModuleType, small_suite: list[Path], tmp_path: Path) -> None:
    first = next(p for p in small_suite if p.stem == "w1s_sitcom")
    (second,) = w1.build(tmp_path, MEDIA, small=True, only=["w1s_sitcom"])
    assert _gt(second) == _gt(first)
    cut = _gt(first)["cuts"][1]["frame"]
    # iter_frames, not frames_at: frames_at loops forever when the keyframe before a wanted
    # time lies more than 4.5 s back (here: keyframe 2.53 s, cut 7.63 s); reported to the lead.
    wanted = {0, cut - 1, cut, 401, 599}
    a, b = ({f.index: f.image for f in iter_frames(v) if f.index in wanted}
            for v in (first, second))
    assert set(a) == wanted
    for index in wanted:
        np.testing.assert_array_equal(a[index], b[index])
    np.testing.assert_array_equal(decode_audio(first), decode_audio(second))


def test_grid_sentences_follow_the_grammar(w1: ModuleType) -> None:
    assert w1.grid_sentence("bbaf2n") == "bin blue at f two now"
    assert w1.grid_sentence("id2_vcd_swwp2s") == "set white with p two soon"
    assert w1.grid_sentence("lrwp9a") == "lay red with p nine again"


def test_default_shot_detector_recovers_the_cuts(small_suite: list[Path]) -> None:
    pytest.importorskip("scenescribe.shots.pyscenedetect",
                        reason="the PySceneDetect shot backend is not in the tree yet")
    from scenescribe.pipeline import detect_scenes

    video = next(p for p in small_suite if p.stem == "w1s_football")
    found = [s.start_frame for s in detect_scenes(video)[1:]]
    expected = [c["frame"] for c in _gt(video)["cuts"]]
    assert len(found) == len(expected)
    assert all(abs(f - e) <= 1 for f, e in zip(found, expected, strict=True)), (found, expected)
