"""One decode step's attention over a padded cache, per kernel: seconds and bandwidth.

    PYTHONPATH=$PWD/src python3 benchmarks/gpu/decode_attention.py [--device cuda]

For the shapes of W1's captioners (rows, key/value heads, query heads per key/value head,
cache positions), times ``decode_attention.attend`` with each kind (``KINDS``) and prints
milliseconds per layer, the bytes of keys and values read per second, and the largest
difference from a float32 reference. Alone on the H200 (2026-12-03) the kinds read alike; the
static decoder's default follows the step timed in place (``profile_captions.py`` with and
without ``SCENESCRIBE_DECODE_SDPA=1``), where ``matmul`` was 1.5x faster.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import torch

from scenescribe.captions.decode_attention import KINDS, attend

# name: rows, kv heads, group, cache positions (prompt + 256 new, bucketed), head dim
SHAPES = {
    "llava-vicuna b36": (36, 32, 1, 4352, 128),
    "llava-mistral b36": (36, 8, 4, 4352, 128),
    "llava-mistral b64": (64, 8, 4, 4352, 128),
    "instructblip 64 x 5 beams": (64, 32, 5, 1536, 128),  # a scene's beams share its row
    "phi-3.5-vision b64": (64, 32, 1, 2560, 96),
}


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    gen = torch.Generator(device=args.device).manual_seed(0)
    for name, (rows, kv, group, length, dim) in SHAPES.items():
        if args.device != "cuda":
            rows, length = max(1, rows // 16), length // 16
        q = torch.randn(rows, kv, group, dim, device=args.device, dtype=dtype, generator=gen)
        k = torch.randn(rows, kv, length, dim, device=args.device, dtype=dtype, generator=gen)
        v = torch.randn(rows, kv, length, dim, device=args.device, dtype=dtype, generator=gen)
        # Left padding of up to 300 positions and about 60% of the buffer written, as mid-decode.
        lengths = torch.randint(0, min(300, length // 4), (rows,), device=args.device, generator=gen)
        pos = torch.arange(length, device=args.device)
        valid = ((pos[None] >= lengths[:, None]) & (pos[None] < int(length * 0.6)))[:, None, None]
        scale = dim ** -0.5
        ref = attend(q.float(), k.float(), v.float(), valid, scale, "matmul")
        moved = 2 * k.numel() * k.element_size()
        line = [f"{name:26s}"]
        for kind in KINDS:
            step = functools.partial(attend, q, k, v, valid, scale, kind)
            with torch.inference_mode():
                seconds = timed(step, args.device, args.repeats)
                err = (step().float() - ref).abs().max().item()
            line.append(f"{kind} {seconds * 1e3:7.3f} ms {moved / seconds / 1e12:5.2f} TB/s "
                        f"err {err:.1e}")
        print(" | ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
