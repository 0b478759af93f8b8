"""YOLOv8n through the pipeline and beside other threads: detections kept apart from tracking,
the frames read from the shot detector's spool, ultralytics' timer without device syncs, and
predicts that wait out a model build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scenescribe.records import VideoInfo


def test_pipeline_detects_once_and_tracks_again_when_only_the_cuts_change(
        photo_clip: VideoInfo, tmp_path: Path) -> None:
    """The real tracker through the pipeline; a rerun with other shot settings (new scenes)
    tracks the stored boxes again without detecting anything."""
    from dataclasses import replace

    import scenescribe
    from scenescribe.options import RunOptions

    options = RunOptions(stages=("objects",), device="cpu")
    first = scenescribe.run(photo_clip.path, tmp_path, options)
    assert not first.failed
    records = [json.loads(line) for line in
               (tmp_path / "photos" / "scenes.jsonl").read_text().splitlines()]
    assert records and all(r["frames"] for r in records)
    labels = {o["label"] for r in records for o in r["objects"]}
    assert {"bus", "person"} <= labels
    assert first.videos[0].timings["detections"]["frames"] == 12
    again = replace(options, shots=replace(options.shots, max_scene_len=1.0))
    second = scenescribe.run(photo_clip.path, tmp_path, again)
    timings = second.videos[0].timings
    assert timings["detections"]["cached"] and not timings["objects"]["cached"]
    assert second.videos[0].scenes > len(records)


def test_the_detector_reads_the_shot_decodes_spool_with_the_same_boxes(
        photo_clip: VideoInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The frames kept from the shot detector's decode (``media.spool``) give the boxes the
    detector's own decode gives; the spool is gone once the detections are stored."""
    import scenescribe
    from scenescribe.media.spool import SPOOL_GB
    from scenescribe.options import RunOptions

    options = RunOptions(stages=("objects",), device="cpu")
    runs = {}
    for budget in ("8", "0"):
        monkeypatch.setenv(SPOOL_GB, budget)
        out = tmp_path / budget
        result = scenescribe.run(photo_clip.path, out, options)
        assert not result.failed
        runs[budget] = (result.videos[0].timings["detections"],
                        next((out / "photos" / ".work").glob("detections-*.jsonl")).read_text(),
                        (out / "photos" / "scenes.jsonl").read_text())
        assert not (out / "photos" / ".work" / "spool").exists()
        # With a spool the detector may start once it is sealed, before the shots are found.
        (done,) = result.finished.values()
        if budget == "8":
            assert done["shots:spooled"] <= min(done["shots"], done["detections"])
        else:
            assert "shots:spooled" not in done and done["shots"] < done["detections"]
    assert runs["8"][0]["spooled"] and not runs["0"][0]["spooled"]
    assert runs["8"][0]["frames"] == runs["0"][0]["frames"] == 12
    assert runs["8"][1:] == runs["0"][1:]


def test_a_shot_backend_that_keeps_no_frames_leaves_no_spool(photo_clip: VideoInfo,
                                                             tmp_path: Path) -> None:
    """A shot detector that ignores the spool (here a fake one) leaves it unsealed: it is
    removed, and the object detector decodes its frames itself."""
    from dataclasses import replace

    import scenescribe
    from fake_setup import fake_options
    from scenescribe.options import ObjectOptions

    options = replace(fake_options(), stages=("objects",), objects=ObjectOptions())
    result = scenescribe.run(photo_clip.path, tmp_path, options)
    assert not result.failed
    timing = result.videos[0].timings["detections"]
    assert timing["frames"] == 12 and not timing["spooled"]
    assert not (tmp_path / "photos" / ".work" / "spool").exists()


def test_predict_timing_never_synchronises_the_device(tracker: object,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ultralytics' step timer synchronises the whole device; inside scenescribe's predict
    calls it reads the clock alone (a sync waited for the captioner's queued prefill), and
    outside them it is ultralytics' own again."""
    import torch
    from ultralytics.utils import ops

    from scenescribe.objects.yolo import timing_without_syncs

    def refuse(*args: object) -> None:
        raise AssertionError("synchronised the device")

    monkeypatch.setattr(torch.cuda, "synchronize", refuse)
    timer = ops.Profile(device=torch.device("cuda"))
    with timing_without_syncs(), timer:
        pass
    assert timer.t >= 0
    with pytest.raises(AssertionError, match="synchronised"):
        timer.time()  # restored
    seen: list[object] = []
    original = timing_without_syncs

    def watched() -> object:
        seen.append(True)
        return original()

    monkeypatch.setattr("scenescribe.objects.yolo.timing_without_syncs", watched)
    tracker.detect([np.zeros((64, 64, 3), np.uint8)])  # type: ignore[attr-defined]
    assert seen, "detect ran ultralytics' predict outside timing_without_syncs"


def test_predict_waits_out_a_build_that_changes_the_default_dtype(tracker: object) -> None:
    """A model build (transformers' ``from_pretrained``) sets torch's default dtype for the
    whole process; a predict beside it made its empty detections in that dtype (bfloat16, which
    numpy cannot take). The predict waits for the build to end."""
    import threading

    import torch

    from scenescribe.backend import _BUILD_LOCK
    from scenescribe.media import DecodedFrame

    gray = DecodedFrame(0, 0.0, np.full((256, 320, 3), 114, np.uint8))  # nothing to detect
    boxes = tracker._boxes  # type: ignore[attr-defined]
    list(boxes([(0, gray)], None))  # the predictor is set up: the call below is quick
    building, predicted = threading.Event(), threading.Event()

    def build() -> None:
        with _BUILD_LOCK:
            kept = torch.get_default_dtype()
            torch.set_default_dtype(torch.bfloat16)
            building.set()
            predicted.wait(2.0)  # a predict beside the build would end well within this
            torch.set_default_dtype(kept)

    found: list[object] = []
    failed: list[BaseException] = []

    def predict() -> None:
        try:
            found.extend(boxes([(0, gray)], None))
        except BaseException as exc:  # reported by the assertion below
            failed.append(exc)
        predicted.set()

    builder = threading.Thread(target=build)
    builder.start()
    assert building.wait(10)
    predictor = threading.Thread(target=predict)
    predictor.start()
    builder.join()
    predictor.join()
    assert not failed and len(found) == 1
    assert found[0].boxes.shape == (0, 6) and found[0].boxes.dtype == np.float32  # type: ignore[attr-defined]
