"""YOLO detection as one batched pass on the model's device, with ``predict``'s detections.

Ultralytics' ``predict`` letterboxes each frame with OpenCV on the CPU, runs the model once,
suppresses image by image (a dozen small launches and three host syncs an image) and builds a
``Results`` per frame; on the H200 beside the captioner (16 busy CPUs) that host work was most of
the detection stage (py-spy: model 2.0 s of 6.3 s, suppression 0.9 s, letterbox 1.0 s). Here the
frames go up in one copy, are padded, run through predict's own fused ``AutoBackend`` and
suppressed together on the device, and the boxes come back in one copy, equal to predict's:

- Letterbox: frames are decoded with the long side at ``imgsz``, so ``LetterBox`` only pads; its
  own numbers place them on a 114 canvas. A frame that would need a resize is left to predict.
- Suppression is greedy NMS on ultralytics' class-offset boxes, with the IoU arithmetic and
  threshold comparison of torchvision's kernel on that device, for every image at once: the fixed
  point of "kept = not overlapped by an earlier kept box" (Cluster-NMS, Zheng et al. 2021: the
  same kept set as the sequential loop, here in 2-4 rounds). No per-image offsets, as a single
  ``batched_nms`` would add: they would round the coordinates, and so the IoUs.
- Ties: fp16 scores tie often (a few thousand levels above 0.25), and which of two tied boxes
  survives, and the order of the rows, is the order torchvision's sort gives them: its input
  order (a stable sort, ``ties_kept_in_order``), which one stable sort of all rows reproduces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

MAX_WH = 7680  # non_max_suppression's per-class offset: boxes of two classes never overlap
MAX_NMS = 30000  # its cap on one image's candidates, which it cuts by an unstable argsort
PAIRS = 1 << 24  # IoU matrix elements per chunk of images (64 MB of float32)


def detect_batch(predictor: Any, images: Sequence[np.ndarray], conf: float,
                 imgsz: int) -> list[np.ndarray] | None:
    """Each RGB uint8 frame's detections as (N, 6) float32 rows (x1, y1, x2, y2 in the frame's
    pixels, confidence, class), as ``predict(conf=conf, imgsz=imgsz)`` gives them through
    ``predictor`` (set up by such a call, on the same device); None for a call this path does not
    cover (frames of several shapes or needing a resize, an NMS-free or exported model)."""
    backend = getattr(predictor, "model", None)
    if not images or not _covered(predictor, backend, images):
        return None
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ops
    from ultralytics.utils.checks import check_imgsz

    stride = backend.stride
    pad = LetterBox(check_imgsz(imgsz, stride=stride, min_dim=2), auto=True,
                    stride=stride).get_params({"img": images[0]})
    height, width = images[0].shape[:2]
    if tuple(pad["new_unpad"]) != (width, height):
        return None  # a resize: OpenCV's interpolation, not redone here
    args = predictor.args
    with torch.inference_mode():
        batch = letterboxed(images, backend.device, bool(backend.fp16), pad)
        out = backend(batch, augment=False, embed=None)
        preds = out[0] if isinstance(out, (list, tuple)) else out
        rows, counts = suppress(preds, conf, args.iou, args.max_det, args.classes,
                                bool(args.agnostic_nms))
        rows[:, :4] = ops.scale_boxes(batch.shape[2:], rows[:, :4], (height, width))
        # One copy back: the rows, then each image's count (exact in float32).
        flat = torch.cat((rows.flatten(), counts.to(rows.dtype))).cpu().numpy()
    sizes = flat[flat.size - len(images):].astype(np.int64)
    boxes = flat[:flat.size - len(images)].reshape(-1, 6)
    return np.split(boxes, np.cumsum(sizes)[:-1])


def _covered(predictor: Any, backend: Any, images: Sequence[np.ndarray]) -> bool:
    """Whether ``predict`` would take the path rebuilt here: a set-up detection predictor over a
    native PyTorch model with an NMS head, letterboxing same-shaped RGB uint8 frames (``auto``)."""
    if backend is None or not getattr(predictor, "done_warmup", False):
        return False
    args = predictor.args
    shape = images[0].shape
    return (getattr(backend, "format", None) == "pt" and not getattr(backend, "end2end", False)
            and not hasattr(backend, "imgsz") and getattr(backend, "channels", 3) == 3
            and args.task == "detect" and bool(args.rect) and not predictor.scale_fill
            and not (args.augment or args.embed or args.visualize)
            and len(shape) == 3 and shape[2] == 3
            and all(im.shape == shape and im.dtype == np.uint8 for im in images))


def letterboxed(images: Sequence[np.ndarray], device: torch.device, half: bool,
                pad: dict[str, Any]) -> torch.Tensor:
    """The frames as predict's model input (N, 3, H, W): stacked once on the host (pinned for a
    GPU, so the upload is one asynchronous copy), padded with 114 on the device where LetterBox
    pads, in fp16 where the model is, divided by 255. The frames are RGB already: ultralytics
    takes BGR and flips it, so the values are the same with no flip at all."""
    height, width = images[0].shape[:2]
    host = torch.empty((len(images), height, width, 3), dtype=torch.uint8,
                       pin_memory=device.type == "cuda")
    np.stack(images, out=host.numpy())
    frames = host.to(device, non_blocking=True)
    top, left = pad["top"], pad["left"]
    canvas = torch.full((len(images), 3, height + top + pad["bottom"], width + left + pad["right"]),
                        114, dtype=torch.uint8, device=device)
    canvas[:, :, top:top + height, left:left + width] = frames.permute(0, 3, 1, 2)
    return (canvas.half() if half else canvas.float()).div_(255)  # predict's ops, in its order


def suppress(preds: torch.Tensor, conf: float, iou: float, max_det: int,
             classes: Sequence[int] | None = None,
             agnostic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Ultralytics' ``non_max_suppression`` (single label, NMS head) for the whole batch: the
    kept rows (x1, y1, x2, y2, confidence, class) of every image, float32, in image order and
    each image's in its order, and how many each image kept."""
    scores = preds[:, 4:]
    best, label = scores.max(1)  # ties between classes: the first, as its per-row max
    chosen = best > conf  # in the model's dtype, as its amax() > conf_thres
    if classes is not None:
        chosen &= (label[..., None] == torch.as_tensor(classes, device=preds.device)).any(-1)
    counts = chosen.sum(1)
    sizes = counts.tolist()  # the one sync before the copy back: it sizes everything below
    width, total = max(sizes, default=0), sum(sizes)
    if total == 0:
        return preds.new_zeros((0, 6), dtype=torch.float32), counts
    if width * width > PAIRS or width > MAX_NMS or not ties_kept_in_order(preds.device):
        return _per_image(preds, conf, iou, max_det, classes, agnostic)
    # Each image's candidates packed to the left of a (B, width) table, in anchor order.
    image, anchor = torch.nonzero_static(chosen, size=total).unbind(1)
    starts = counts.cumsum(0) - counts
    slot = torch.arange(total, device=preds.device) - starts[image]
    anchors = torch.zeros((len(sizes), width), dtype=torch.long, device=preds.device)
    anchors[image, slot] = anchor
    valid = torch.arange(width, device=preds.device) < counts[:, None]
    ranked = best.gather(1, anchors).masked_fill_(~valid, -torch.inf)
    order = anchors.gather(1, ranked.sort(dim=1, descending=True, stable=True).indices)
    # The rows as ultralytics builds them: xyxy in the model's dtype, then float32.
    from ultralytics.utils.ops import xywh2xyxy

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(2, order[:, None].expand(-1, values.shape[1], -1)).transpose(1, 2)

    box = xywh2xyxy(pick(preds[:, :4]))
    rows = torch.cat((box, pick(best[:, None]), pick(label[:, None]).float()), 2)
    offset = rows[..., :4] + rows[..., 5:6] * (0 if agnostic else MAX_WH)
    keep = torch.cat([_greedy(offset[i:i + n], valid[i:i + n], iou)
                      for i, n in _chunks(len(sizes), width)])
    keep &= keep.cumsum(1) <= max_det
    return rows[keep], keep.sum(1)


def ties_kept_in_order(device: torch.device) -> bool:
    """Whether torchvision's ``nms`` on ``device`` orders equal scores as they came: which of
    two tied boxes survives, and the order of the rows, follow its sort. Its kernels sort
    stably (checked on torchvision 0.26 on CUDA, 0.29 on the CPU); an unstable sort (older
    builds) would need that sort's own tie order, so the batched path declines there. Asked
    once per device type, with sizes either side of CUDA's 32-key bitonic sort."""
    stable = _STABLE.get(device.type)
    if stable is None:
        import torchvision

        gen = torch.Generator().manual_seed(0)
        stable = True
        for n in (12, 40, 300):
            scores = torch.randint(1, 5, (n,), generator=gen).float() / 5
            left = torch.arange(n, dtype=torch.float32) * 20
            boxes = torch.stack((left, left * 0, left + 10, left * 0 + 10), 1)
            keep = torchvision.ops.nms(boxes.to(device), scores.to(device), 0.5).cpu()
            stable &= torch.equal(keep, scores.sort(dim=0, descending=True, stable=True).indices)
        _STABLE[device.type] = stable
    return stable


_STABLE: dict[str, bool] = {}


def _chunks(images: int, width: int) -> list[tuple[int, int]]:
    """Runs of images whose IoU matrices together stay within ``PAIRS`` elements."""
    step = max(1, PAIRS // (width * width))
    return [(i, min(step, images - i)) for i in range(0, images, step)]


def _greedy(boxes: torch.Tensor, valid: torch.Tensor, iou: float) -> torch.Tensor:
    """Which of each image's boxes (in score order) greedy NMS keeps, deciding each overlap in
    the float32 arithmetic of torchvision's kernel on that device (decisions at the threshold
    flip with the last bit of an IoU)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    width, height = x2 - x1, y2 - y1
    area = width * height
    w = (torch.minimum(x2[:, :, None], x2[:, None]) - torch.maximum(x1[:, :, None], x1[:, None]))
    h = (torch.minimum(y2[:, :, None], y2[:, None]) - torch.maximum(y1[:, :, None], y1[:, None]))
    inter = w.clamp_(min=0) * h.clamp_(min=0)
    if boxes.device.type == "cuda":
        # nvcc fused the later box's area product into the sum (an FFMA in the kernel's SASS):
        # fma in float64, where a product of two float32 is exact (a double rounding remains
        # possible, about once in 2^29 sums, and only matters right at the threshold).
        fused = area[:, :, None].double() + (width.double() * height.double())[:, None]
        union = fused.float() - inter
    else:
        union = area[:, :, None] + area[:, None] - inter  # the CPU kernel's separate roundings
    overlap = inter / union > _threshold(iou, boxes.device)
    overlap &= torch.ones_like(overlap[0]).triu_(1)  # only an earlier box suppresses a later one
    keep = valid
    for _ in range(boxes.shape[1]):  # each round settles at least the next box; 2-4 in practice
        kept = valid & ~(overlap & keep[:, :, None]).any(1)
        if torch.equal(kept, keep):
            break
        keep = kept
    return keep


def _threshold(iou: float, device: torch.device) -> float:
    """The float32 bound torchvision compares float32 IoUs with: CUDA casts the threshold to
    float32; the CPU kernel compares in double, which is ``> t`` for the largest float32 t at or
    below it."""
    bound = np.float32(iou)
    if device.type != "cuda" and float(bound) > iou:
        bound = np.nextafter(bound, np.float32(0))
    return float(bound)


def _per_image(preds: torch.Tensor, conf: float, iou: float, max_det: int,
               classes: Sequence[int] | None, agnostic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Ultralytics' own loop: for more candidates than one IoU matrix should hold (a very low
    ``conf``), or a torchvision that orders ties otherwise."""
    from ultralytics.utils.nms import non_max_suppression

    found = non_max_suppression(preds, conf, iou, classes=classes, agnostic=agnostic,
                                max_det=max_det)
    return torch.cat(found), torch.tensor([len(f) for f in found], device=preds.device)
