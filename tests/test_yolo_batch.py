"""The batched YOLO path (``objects/yolo_batch.py``) against ultralytics' own ``predict`` and
``non_max_suppression``: the same boxes, bit for bit, on real frames (the photo clip, a real
film, frames of an odd size, black frames) and on synthetic candidates built to tie and
overlap; ``predict`` for what the path does not cover. Each test runs on the CPU, and on CUDA
where there is one."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from conftest import MODELS, media
from scenescribe.media import frames_at, probe
from scenescribe.objects import yolo_batch
from scenescribe.objects.yolo_batch import detect_batch, suppress, ties_kept_in_order
from scenescribe.records import VideoInfo

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.fixture(scope="module", params=DEVICES)
def yolo(request: pytest.FixtureRequest, tracker: object) -> Iterator[object]:
    """The loaded CPU tracker, or one on CUDA (fp16, as the pipeline runs it there)."""
    if request.param == "cpu":
        yield tracker
        return
    from scenescribe import registry
    from scenescribe.options import ObjectOptions

    backend = registry.create("yolov8n", "objects", options=ObjectOptions(), device="cuda",
                              model_dir=MODELS)
    backend.load()
    yield backend
    backend.unload()


def _both(yolo: object, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``predict``'s boxes and the batched path's, for the same frames."""
    predicted = yolo._predicted(images)  # type: ignore[attr-defined]  # also sets predict up
    batched = detect_batch(yolo.model.predictor, images, 0.25, 640)  # type: ignore[attr-defined]
    assert batched is not None, "the batched path refused frames it covers"
    return predicted, batched


def _assert_same(predicted: list[np.ndarray], batched: list[np.ndarray]) -> None:
    assert len(predicted) == len(batched)
    for ours, theirs in zip(batched, predicted, strict=True):
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


def _frames(path: object, times: list[float], short_side: int) -> list[np.ndarray]:
    shown = frames_at(path, times, short_side=short_side)  # type: ignore[arg-type]
    return [f.image for f in shown.values()]


def test_photo_clip_boxes_equal_predicts(yolo: object, photo_clip: VideoInfo) -> None:
    images = _frames(photo_clip.path, [0.5 * i for i in range(12)], 480)
    predicted, batched = _both(yolo, images)
    _assert_same(predicted, batched)
    assert sum(len(b) for b in batched) >= 40  # a bus and people in every frame


@pytest.mark.parametrize(("clip", "times", "least"), [
    ("shots/dv_steamboat.mp4", [1.5, 2.0, 2.5, 20.5, 23.0, 23.5, 25.0, 25.5], 20),  # 1928 film
    ("shots/psd_issue-195-aspect-ratio.mp4", [7.5, 8.0, 10.0, 10.5, 11.0, 13.5, 15.0, 16.0], 18),
])
def test_real_footage_boxes_equal_predicts(yolo: object, clip: str, times: list[float],
                                           least: int) -> None:
    """Real footage (a flickering cartoon with several figures; a TV documentary, 524x640 as
    decoded), decoded as the tracker decodes it."""
    video = probe(media(clip))
    images = _frames(video.path, times, yolo._short_side(video))  # type: ignore[attr-defined]
    predicted, batched = _both(yolo, images)
    _assert_same(predicted, batched)
    assert sum(len(b) for b in batched) >= least


@pytest.mark.parametrize("portrait", [False, True])
def test_odd_sized_frames_padded_on_both_sides(yolo: object, photo_clip: VideoInfo,
                                               portrait: bool) -> None:
    """357 px to fill up to 384: LetterBox puts 13 rows (columns) before and 14 after; the boxes
    come back into the frame's own pixels."""
    frames = _frames(photo_clip.path, [0.5, 1.0, 3.5, 4.0], 480)
    images = [im[:357] for im in frames]
    if portrait:  # 640x357 upright: two overlapping crops of the frame, one above the other
        images = [np.concatenate((im[:320, 140:497], im[160:, 140:497])) for im in frames]
    predicted, batched = _both(yolo, images)
    _assert_same(predicted, batched)
    assert all(len(b) for b in batched)
    height, width = images[0].shape[:2]
    assert all((b[:, [0, 2]] <= width).all() and (b[:, [1, 3]] <= height).all() for b in batched)


def test_black_frames_find_nothing(yolo: object) -> None:
    images = [np.zeros((360, 640, 3), np.uint8)] * 3
    predicted, batched = _both(yolo, images)
    _assert_same(predicted, batched)
    assert all(b.shape == (0, 6) for b in batched)


def test_detect_takes_the_batched_path_and_predict_for_the_rest(
        yolo: object, photo_clip: VideoInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once predict has set ultralytics' predictor up, same-shaped frames take the batched
    path; mixed shapes, frames needing a resize and ``SCENESCRIBE_YOLO_PREDICT=1`` go through
    predict (the boxes predict gives for the same call)."""
    images = _frames(photo_clip.path, [0.5, 4.0], 480)
    yolo._predicted(images)  # type: ignore[attr-defined]
    calls: list[str] = []
    predicted, batched = yolo._predicted, yolo_batch.detect_batch  # type: ignore[attr-defined]

    def spy_predicted(frames: list[np.ndarray]) -> list[np.ndarray]:
        calls.append("predict")
        return predicted(frames)  # type: ignore[no-any-return]

    def spy_batched(*args: object) -> object:
        found = batched(*args)  # type: ignore[arg-type]
        calls.append("batched" if found is not None else "refused")
        return found

    monkeypatch.setattr(yolo, "_predicted", spy_predicted)
    monkeypatch.setattr(yolo_batch, "detect_batch", spy_batched)
    detect = yolo.detect  # type: ignore[attr-defined]
    assert [len(b) for b in detect(images)] == [len(b) for b in predicted(images)]
    assert calls == ["batched"]
    calls.clear()
    mixed = [images[0], images[1][:357]]
    _assert_same(predicted(mixed), detect(mixed))
    small = [images[0][::2, ::2]] * 2  # 320x240: LetterBox would resize
    _assert_same(predicted(small), detect(small))
    assert calls == ["refused", "predict", "refused", "predict"]
    calls.clear()
    monkeypatch.setenv("SCENESCRIBE_YOLO_PREDICT", "1")
    _assert_same(predicted(images), detect(images))
    assert calls == ["predict"]


def _candidates(device: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """YOLO-shaped predictions (5 images, 4 + 80 channels, 400 anchors): clusters of jittered
    boxes of several classes, some clusters on the same spot with another class, scores on
    fp16's grid so many tie; image 1 has nothing above 0.25, image 3 more boxes than max_det."""
    gen = torch.Generator().manual_seed(seed)
    images, anchors, classes = 5, 400, 80
    preds = torch.zeros(images, 4 + classes, anchors)
    preds[:, 4:] = torch.rand(images, classes, anchors, generator=gen) * 0.2
    for image in (0, 2, 3, 4):
        clusters = 60 if image == 3 else 12
        per = anchors // clusters
        for c in range(clusters):
            cls = int(torch.randint(0, 6, (1,), generator=gen))
            centre = torch.rand(2, generator=gen) * 600 + 20
            size = torch.rand(2, generator=gen) * 120 + 10
            span = slice(c * per, (c + 1) * per)
            jitter = torch.randn(4, per, generator=gen)
            preds[image, 0:2, span] = centre[:, None] + jitter[:2] * size[:, None] * 0.08
            preds[image, 2:4, span] = size[:, None] * (1 + jitter[2:] * 0.1)
            preds[image, 4 + cls, span] = 0.2 + torch.rand(per, generator=gen) * 0.75
            if c % 4 == 0:  # the same spot also scored for another class
                preds[image, 4 + (cls + 1) % 6, span] = 0.2 + torch.rand(per, generator=gen) * 0.7
    preds[1, 4:] = preds[1, 4:].clamp(max=0.24)
    return preds.half().to(dtype).to(device)  # fp16's grid: ties in scores and boxes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("agnostic", "classes"), [(False, None), (True, None), (False, [0, 2, 5])])
def test_suppression_equals_ultralytics_nms(device: str, agnostic: bool,
                                            classes: list[int] | None) -> None:
    import torchvision  # noqa: F401  (ultralytics' NMS takes torchvision's kernel once imported)
    from ultralytics.utils.nms import non_max_suppression

    for dtype in (torch.float32, torch.float16) if device == "cuda" else (torch.float32,):
        preds = _candidates(device, dtype)
        expected = non_max_suppression(preds.clone(), 0.25, 0.7, classes, agnostic, max_det=40)
        rows, counts = suppress(preds, 0.25, 0.7, 40, classes, agnostic)
        assert counts.tolist() == [len(e) for e in expected]
        assert rows.dtype == torch.float32
        assert torch.equal(rows, torch.cat(expected))
        found = counts.tolist()
        assert found[1] == 0 and all(found[i] for i in (0, 2, 3, 4))
        if classes is None:
            assert found[3] == 40  # capped at max_det
        scores = preds[:, 4:].amax(1)
        kept = scores[scores > 0.25]
        assert len(kept) > 2 * sum(found) and len(kept.unique()) < len(kept)  # ties, suppression


@pytest.mark.parametrize("device", DEVICES)
def test_tied_scores_keep_torchvisions_order(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's ``nms`` here sorts stably (ties in input order), which the batched sort
    reproduces; where a build did not, suppression would take ultralytics' own loop instead,
    with the same rows."""
    import torchvision  # noqa: F401
    from ultralytics.utils.nms import non_max_suppression

    assert ties_kept_in_order(torch.device(device))
    preds = _candidates(device, torch.float32, seed=3)
    expected = torch.cat(non_max_suppression(preds.clone(), 0.25, 0.7, max_det=300))
    monkeypatch.setitem(yolo_batch._STABLE, torch.device(device).type, False)
    calls: list[int] = []
    own_loop = yolo_batch._per_image

    def counted(*args: object) -> object:
        calls.append(1)
        return own_loop(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(yolo_batch, "_per_image", counted)
    rows, _ = suppress(preds, 0.25, 0.7, 300)
    assert calls and torch.equal(rows, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_overlap_decisions_at_the_threshold_equal_torchvisions(device: str) -> None:
    """Pairs of boxes whose IoU is within a few float32 steps of 0.7: the later box is dropped
    exactly when torchvision's ``nms`` drops it."""
    import torchvision

    gen = torch.Generator().manual_seed(2)
    pairs = 600
    first = torch.rand(pairs, 4, generator=gen, dtype=torch.float64) * 300
    first[:, 2:] += first[:, :2] + 5
    width = first[:, 2] - first[:, 0]
    shift = width * 0.3 / 1.7  # IoU (w - d) / (w + d) = 0.7 for a horizontal shift d
    second = first.clone()
    second[:, [0, 2]] += (shift * (1 + (torch.rand(pairs, generator=gen, dtype=torch.float64)
                                        - 0.5) * 2e-6))[:, None]
    boxes = torch.stack((first, second), 1).float().to(device)
    valid = torch.ones(pairs, 2, dtype=torch.bool, device=device)
    keep = yolo_batch._greedy(boxes, valid, 0.7)[:, 1].tolist()
    scores = torch.tensor([0.9, 0.8], device=device)
    expected = [len(torchvision.ops.nms(b, scores, 0.7)) == 2 for b in boxes]
    assert keep == expected
    assert 0 < sum(keep) < pairs  # both sides of the threshold are tried
