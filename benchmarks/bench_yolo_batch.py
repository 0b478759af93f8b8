"""YOLO detection: ultralytics' ``predict`` against scenescribe's batched path (``yolo_batch``).

Frames of a real clip are decoded once as the tracker decodes them (long side at ``imgsz``), then
the same batches go through both paths, alternately, ``--runs`` times; the script prints each
path's median seconds per batch and frames per second, checks that both found the same boxes
(bit for bit) and prints how many they found. Both paths run under the tracker's own locks, as
``YoloTracker.detect`` runs them.

    SCENESCRIBE_MODEL_DIR=../shared/models .venv/bin/python benchmarks/bench_yolo_batch.py \\
        ../shared/media/real/intel_one-by-one-person-detection.mp4 --frames 64 --batch 8
    python benchmarks/bench_yolo_batch.py CLIP --device cuda --batch 64 --model-dir .carry

``--threads N`` sets torch's thread count first (the CPU default is all cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import torch

    from scenescribe import registry
    from scenescribe.media import frames_at, probe
    from scenescribe.objects.yolo_batch import detect_batch
    from scenescribe.options import ObjectOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    tracker = registry.create("yolov8n", "objects", options=ObjectOptions(), device=args.device,
                              model_dir=args.model_dir)
    tracker.load()
    info = probe(args.clip)
    times = list(np.linspace(0, info.duration * 0.98, args.frames))
    shown = frames_at(info.path, times, short_side=tracker._short_side(info))
    images = [f.image for f in shown.values()]
    batches = [images[i:i + args.batch] for i in range(0, len(images), args.batch)]
    print(f"{args.clip.name}: {len(images)} frames {images[0].shape[1]}x{images[0].shape[0]}, "
          f"batches of {args.batch}, {args.device}, torch threads {torch.get_num_threads()}")

    def predicted(batch: list[np.ndarray]) -> list[np.ndarray]:
        return tracker._predicted(batch)  # type: ignore[no-any-return]

    def batched(batch: list[np.ndarray]) -> list[np.ndarray]:
        found = detect_batch(tracker.model.predictor, batch, tracker.options.confidence,
                             tracker.options.imgsz)
        assert found is not None, "the batched path does not cover these frames"
        return found

    predicted(batches[0])  # sets the predictor up (fused model, warm-up)
    seconds: dict[str, list[float]] = {"predict": [], "batched": []}
    found: dict[str, list[np.ndarray]] = {}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for _ in range(args.runs):
        for name, path in (("predict", predicted), ("batched", batched)):
            with tracker._predict_lock:
                sync()
                start = time.perf_counter()
                out = [boxes for batch in batches for boxes in path(batch)]
                sync()
                seconds[name].append(time.perf_counter() - start)
            found[name] = out
    same = all(a.shape == b.shape and np.array_equal(a, b)
               for a, b in zip(found["predict"], found["batched"], strict=True))
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:8s} {median / len(batches) * 1e3:8.1f} ms/batch  "
              f"{len(images) / median:7.1f} frames/s  (runs: "
              + " ".join(f"{v:.3f}" for v in values) + " s)")
    print(f"boxes: {sum(len(b) for b in found['predict'])}, identical: {same}")


if __name__ == "__main__":
    main()
