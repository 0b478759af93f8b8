"""Objects per scene without a model: the Detections struct of arrays and the per-scene
summaries (counts, tracks, confidence, order)."""

from __future__ import annotations

import numpy as np
import pytest

from scenescribe.objects.detections import UNTRACKED, Detections
from scenescribe.objects.summary import SceneObjects, summarize

NAMES = {0: "person", 2: "car", 5: "bus"}


def _dets(cls: list[int], conf: list[float], ids: list[int] | None = None,
          time: float = 0.0) -> Detections:
    boxes = [[10.0 * i, 0.0, 10.0 * i + 5, 5.0] for i in range(len(cls))]
    return Detections.create(boxes, conf, cls, ids, time)


def test_detections_mask_and_types() -> None:
    d = _dets([0, 5, 0], [0.9, 0.8, 0.3], [1, -1, 2], time=1.5)
    assert len(d) == 3 and d.xyxy.dtype == np.float32 and d.class_id.dtype == np.int64
    people = d[d.class_id == 0]
    assert len(people) == 2 and people.tracker_id.tolist() == [1, 2] and people.time == 1.5
    assert people.xyxy[1].tolist() == [20.0, 0.0, 25.0, 5.0]  # rows stay aligned
    assert d[d.confidence > 0.5].class_id.tolist() == [0, 5]
    assert d.tracked.tolist() == [True, False, True]
    assert len(d[1]) == 1 and d[1].class_id.tolist() == [5]  # an int keeps the box axis
    assert len(d[np.zeros(3, bool)]) == 0


def test_detections_empty_and_validation() -> None:
    e = Detections.empty(time=2.0)
    assert len(e) == 0 and e.xyxy.shape == (0, 4) and e.time == 2.0
    assert Detections.create([[0, 0, 1, 1]], [0.5], [3]).tracker_id.tolist() == [UNTRACKED]
    with pytest.raises(ValueError, match="confidence"):
        Detections(np.zeros((2, 4), np.float32), np.zeros(3, np.float32),
                   np.zeros(2, np.int64), np.zeros(2, np.int64))


def test_summary_max_count_tracks_confidence() -> None:
    frames = [
        _dets([0, 0, 5], [0.9, 0.7, 0.8], [1, 2, 3]),
        _dets([0, 0, 0], [0.6, 0.6, 0.6], [1, 5, 4]),  # 3 at once; ids 1, 2, 4, 5 seen
        _dets([], []),  # an empty frame changes nothing
        _dets([2], [0.5]),  # a car never tracked: tracks fall back to max_count
    ]
    out = summarize(frames, NAMES)
    assert [o.label for o in out] == ["person", "bus", "car"]  # max_count, then confidence
    person, bus, car = out
    assert (person.max_count, person.tracks) == (3, 4)
    assert person.confidence == pytest.approx((0.9 + 0.7 + 0.6 * 3) / 5)
    assert (bus.max_count, bus.tracks, bus.confidence) == (1, 1, pytest.approx(0.8))
    assert (car.max_count, car.tracks) == (1, 1)


def test_summary_untracked_detections_count() -> None:
    # Two untracked people in one frame, one tracked person in another: at least two existed.
    scene = SceneObjects(NAMES)
    scene.add(_dets([0, 0], [0.4, 0.6], [UNTRACKED, UNTRACKED]))
    scene.add(_dets([0], [0.8], [7]))
    [person] = scene.summaries()
    assert (person.max_count, person.tracks, scene.frames) == (2, 2, 2)
    assert person.confidence == pytest.approx(0.6)
    assert SceneObjects(NAMES).summaries() == []
    assert summarize([_dets([42], [0.5])], NAMES)[0].label == "class_42"


def test_summary_ties_sorted_by_confidence() -> None:
    out = summarize([_dets([0, 5, 2], [0.3, 0.9, 0.6])], NAMES)
    assert [o.label for o in out] == ["bus", "car", "person"]
