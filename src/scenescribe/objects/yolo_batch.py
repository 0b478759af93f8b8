"""One model call for a batch of same-size frames, without ultralytics' per-image device steps.

Ultralytics' ``predict`` letterboxes each frame on the CPU (after scenescribe flipped it to BGR,
a copy that ultralytics flips back), then after the model runs its non-maximum suppression one
image at a time on the device (about twenty small kernels and three waits each) and scales each
image's boxes there. Inside Stage 1, where the tracker's thread shares the interpreter with the
other stages', py-spy on the H200 (``results/h200-2026-12-04-o/spy_objects.txt``, 20 s of W1's
Stage 1) found the tracker's two threads in ``detect`` for 11.9 of their 18.9 s: postprocessing
4.6 s (suppression 2.9 s), preprocessing 1.5 s, the model 1.2 s, the rest waiting for the lock.

Here the batch is padded on the device (ultralytics' own ``LetterBox`` parameters, read once per
frame size), the model runs through the predictor that the first ``predict`` call set up, the
boxes any class scores above the threshold are picked on the device and copied once, and
ultralytics' ``non_max_suppression`` and ``scale_boxes`` run on those few rows on the CPU, image
by image: the same rows in the same order as its own per-image filter keeps, so the detections
are ``predict``'s (``tests/test_objects.py`` compares them on the CPU; on CUDA the suppression's
IoUs may round differently at exactly the threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PAD_VALUE = 114  # ultralytics' letterbox grey


def letterbox_pads(predictor: Any, height: int, width: int) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` padding that the predictor's letterbox gives a batch of
    ``height`` x ``width`` frames, or None where it would resize them (then ``predict`` runs)."""
    # Two frames: ultralytics letterboxes a batch of one shape to the minimal rectangle.
    blank = np.zeros((height, width, 3), np.uint8)
    padded = predictor.pre_transform([blank, blank])[0]
    rows = np.flatnonzero(~np.all(padded == PAD_VALUE, axis=(1, 2)))
    cols = np.flatnonzero(~np.all(padded == PAD_VALUE, axis=(0, 2)))
    if len(rows) != height or len(cols) != width:
        return None  # resized: the frames were not decoded at the model's size
    top, left = int(rows[0]), int(cols[0])
    return (top, padded.shape[0] - height - top, left, padded.shape[1] - width - left)


def batch_pads(predictor: Any, images: Sequence[np.ndarray]) -> tuple[int, int, int, int] | None:
    """The letterbox padding with which ``detect_batch`` gives ``predict``'s detections for
    ``images``, or None where it cannot: no predictor yet, a model other than plain detection
    (an end-to-end head), frames of differing sizes or ones the letterbox would resize."""
    if predictor is None or not images or getattr(predictor, "model", None) is None:
        return None
    if predictor.args.task != "detect" or getattr(predictor.model, "end2end", False):
        return None
    shape = images[0].shape
    if len(shape) != 3 or shape[2] != 3 or any(im.shape != shape for im in images):
        return None
    return letterbox_pads(predictor, shape[0], shape[1])


def detect_batch(predictor: Any, images: Sequence[np.ndarray],
                 pads: tuple[int, int, int, int]) -> list[Any]:
    """Ultralytics ``Results`` of RGB ``images`` padded by ``pads`` (``batch_pads``), on the
    CPU; each keeps its frame as BGR, as ``predict`` gives it (a reversed view)."""
    import torch
    import torch.nn.functional as F
    from ultralytics.engine.results import Results
    from ultralytics.utils import nms, ops

    args = predictor.args
    top, bottom, left, right = pads
    device = predictor.device
    batch = torch.from_numpy(np.stack(images)).to(device)  # uint8 over the bus
    batch = F.pad(batch.permute(0, 3, 1, 2), (left, right, top, bottom), value=PAD_VALUE)
    model = predictor.model
    batch = (batch.half() if model.fp16 else batch.float()).div_(255)
    with torch.inference_mode():
        preds = predictor.inference(batch)
    preds = preds[0] if isinstance(preds, (list, tuple)) else preds  # [images, 4 + classes, boxes]
    # The rows ultralytics' own per-image filter keeps, in its order, copied at once.
    picked = (preds[:, 4:].amax(1) > args.conf).nonzero()
    rows = preds.transpose(1, 2)[picked[:, 0], picked[:, 1]].cpu()
    owner = picked[:, 0].cpu().numpy()
    names = model.names
    results = []
    for i, image in enumerate(images):
        mine = rows[owner == i]
        if len(mine) == 6:  # six boxes would read as an end-to-end head's [boxes, 6] output
            mine = torch.cat([mine, mine.new_zeros(1, mine.shape[1])])  # scores 0: dropped
        kept = nms.non_max_suppression(mine.T[None], args.conf, args.iou, args.classes,
                                       args.agnostic_nms, max_det=args.max_det)[0]
        bgr = image[..., ::-1]
        kept[:, :4] = ops.scale_boxes(batch.shape[2:], kept[:, :4], bgr.shape)
        results.append(Results(bgr, path="", names=names, boxes=kept[:, :6]))
    return results
