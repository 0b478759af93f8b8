"""Scoring shot boundaries against ground truth: matching at ±1 frame, transitions, negatives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenescribe.shots.evaluation import (
    GroundTruth,
    Score,
    Span,
    by_category,
    find_clip,
    load_ground_truth,
    pooled,
    score,
)

TRUTH = GroundTruth("clip", "film", "clip.mp4", cuts=(100, 200, 300),
                    transitions=(Span(150, 170, "dissolve"),),
                    hard_negatives=(Span(250, 255, "flash"),))


def test_cuts_match_within_one_frame_one_to_one() -> None:
    s = score([99, 201, 302], TRUTH)
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    assert s.missed == [300] and s.false == [302]
    # Two predictions around one cut: the nearer matches, the other is a false cut.
    s = score([100, 101, 200, 300], TRUTH)
    assert (s.tp, s.fp, s.fn, s.false) == (3, 1, 0, [101])


def test_boundary_inside_a_transition_is_neither_false_nor_required() -> None:
    s = score([100, 200, 300, 160], TRUTH)
    assert (s.tp, s.fp, s.fn, s.transitions_found, s.transitions) == (3, 0, 0, 1, 1)
    assert score([100, 200, 300, 149], TRUTH).fp == 0  # start - 1 still counts
    assert score([100, 200, 300, 148], TRUTH).fp == 1
    assert score([100, 200, 300], TRUTH).f1 == 1.0  # not finding the dissolve costs nothing


def test_false_cuts_in_hard_negatives_are_counted_apart() -> None:
    s = score([100, 200, 300, 252, 40], TRUTH)
    assert (s.fp, s.fp_in_negatives) == (2, 1)


def test_precision_recall_f1_and_pooling() -> None:
    a = score([100, 200, 300, 40], TRUTH)  # 3 tp, 1 fp
    b = score([], TRUTH)  # 3 fn
    assert a.precision == 0.75 and a.recall == 1.0
    assert a.f1 == pytest.approx(2 * 0.75 / 1.75)
    total = pooled([a, b])
    assert (total.tp, total.fp, total.fn, total.clips) == (3, 1, 3, 2)
    assert total.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 3))
    # A clip without cuts and without predictions is perfect; with one false cut, precision 0.
    empty = GroundTruth("still", "static camera", "s.mp4", cuts=())
    assert score([], empty).f1 == 1.0 and score([10], empty).precision == 0.0
    groups = by_category([(TRUTH, a), (empty, score([10], empty)), (TRUTH, b)])
    assert list(groups) == ["film", "static camera"]
    assert (groups["film"].tp, groups["film"].fn, groups["static camera"].fp) == (3, 3, 1)
    assert Score().f1 == 1.0


def _write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "x.gt.json"
    path.write_text(json.dumps(data))
    return path


def test_load_ground_truth_reads_the_schema(tmp_path: Path) -> None:
    path = _write(tmp_path, {
        "schema": "real-clip-gt/1", "file": "x.mp4", "kind": "music video (concert)",
        "cuts": [{"frame": 50, "type": "hard"}, {"frame": 20, "type": "hard"},
                 {"frame": 80, "type": "dissolve"}],
        "gradual_transitions": [{"type": "fade_in_from_black", "start_frame": 0, "end_frame": 9},
                                {"type": "dissolve", "start_frame": 60, "end_frame": 70}],
        "hard_negatives": [{"type": "flash", "start_frame": 30, "end_frame": 31}]})
    truth = load_ground_truth(path)
    assert truth.name == "x" and truth.category == "music video" and truth.cuts == (20, 50)
    assert truth.transitions == (Span(60, 70, "dissolve"), Span(80, 80, "dissolve"))
    # The opening fade in from black joins no two shots: a boundary there is a false one.
    assert Span(0, 9, "fade_in_from_black") in truth.hard_negatives
    assert score([5], truth).fp == 1


def test_shared_bbb_fade_in_is_a_negative() -> None:
    from conftest import MEDIA

    truth = load_ground_truth(MEDIA / "real/big_buck_bunny_0_30.gt.json")
    assert truth.category == "animation" and truth.cuts == (283, 376, 551)
    assert truth.transitions == () and truth.hard_negatives[-1].start == 8


def test_find_clip_beside_gt_in_corpus_or_package(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    monkeypatch.setenv("SCENESCRIBE_SHOT_CORPUS", str(corpus))
    gt = _write(tmp_path, {"file": "x.mp4", "cuts": []})
    truth = load_ground_truth(gt)
    path, why = find_clip(truth)
    assert path is None and "x.mp4 not found in" in why and str(corpus) in why
    (tmp_path / "x.mp4").write_bytes(b"beside")
    assert find_clip(truth) == (tmp_path / "x.mp4", "")
    (corpus / "x.mp4").write_bytes(b"corpus")
    assert find_clip(truth) == (corpus / "x.mp4", "")
    # Inside an installed package: an importable one, or a distribution's files.
    in_pkg = GroundTruth("p", "x", "conftest_absent.py", cuts=(),
                         source={"package": "scenescribe", "path_in_package": "shots/base.py"})
    found, _ = find_clip(in_pkg)
    assert found is not None and found.name == "base.py"
    gone = GroundTruth("p", "x", "none.mp4", cuts=(),
                       source={"package": "no_such_package_xyz", "path_in_package": "a.mp4"})
    assert "package no_such_package_xyz:a.mp4" in find_clip(gone)[1]
