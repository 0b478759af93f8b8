"""TransNetV2's forward alone: milliseconds per 100-frame window by batch size and precision.

Each video's shots came 4-8 s after its decode on a slow H200 host (``results/h200-2026-12-04-x``)
while the Python around the network takes 0.02 s (CPU, network stubbed): the network is 83
GFLOP a window. This times ``TransNetV2ShotDetector._forward``'s model call on windows of a real
clip (or random frames) in float32 (TF32 as torch allows it for convolutions), with bfloat16
autocast, and channels-last 3D, and prints each one's largest difference in the single-frame
transition probabilities from float32 (a change of cuts needs the shot corpus scored against
ground truth, not this).

    python3 benchmarks/gpu/bench_transnet_forward.py [--clip CLIP] [--device cuda] [--batches 32 64]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np


def windows_of(clip: Path | None, count: int) -> np.ndarray:
    """``count`` network windows ([count, 100, 27, 48, 3] uint8) from a clip's frames."""
    from scenescribe.shots import transnetv2 as tn

    if clip is None:
        return np.random.default_rng(0).integers(0, 255, (count, tn.WINDOW, 27, 48, 3), np.uint8)
    from scenescribe.shots.shared_decode import decode_both

    # The network's own input, as the shot detector makes it from each decoded frame.
    frames = [small for _, small in decode_both(clip, hsv_width=None)]
    found = list(tn._windows(iter(frames)))
    reps = -(-count // len(found))
    return np.stack((found * reps)[:count])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from scenescribe.shots.transnetv2 import CONTEXT, STEP, _build_model

    model = _build_model(args.device)
    data = windows_of(args.clip, max(args.batches))
    variants = {
        "float32": (model, contextlib.nullcontext),
        "bf16 autocast": (model, lambda: torch.autocast(args.device.split(":")[0],
                                                         dtype=torch.bfloat16)),
    }
    if args.device.startswith("cuda"):
        last = _build_model(args.device).to(memory_format=torch.channels_last_3d)
        variants["channels-last"] = (last, contextlib.nullcontext)
    print(f"{'variant':16s} {'batch':>5s} {'ms/window':>10s} {'max |dp|':>9s}")
    for batch in args.batches:
        x = torch.from_numpy(data[:batch]).to(args.device)
        reference = None
        for name, (net, precision) in variants.items():
            with torch.inference_mode(), precision():
                net(x)  # warm-up: kernel choice, lazy loading
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.repeats):
                    single, _ = net(x)
                probs = torch.sigmoid(single[:, CONTEXT:CONTEXT + STEP, 0].float()).cpu().numpy()
            seconds = (time.perf_counter() - start) / args.repeats
            reference = probs if reference is None else reference
            print(f"{name:16s} {batch:5d} {1000 * seconds / batch:10.2f} "
                  f"{float(np.abs(probs - reference).max()):9.4f}")


if __name__ == "__main__":
    main()
