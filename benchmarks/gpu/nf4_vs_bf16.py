"""NF4 beside bf16 for one captioner on W2-shaped scenes, through scenescribe's own caption engine.

Runs on the GPU machine (the device tool). The reference pipeline ran every VLM in 4-bit NF4;
bitsandbytes quantizes only while loading a checkpoint, so the full-size architecture is first
built with random weights and saved, then loaded back twice through ``from_pretrained``: once in
bf16, once in NF4. Both captioners get the same scenes (two 672x378 frames each, the reference's
prompt, exactly 256 new tokens) at the same batch sizes, and the script prints s/scene, load time
and peak GPU memory per setting as JSON lines and a markdown table.

    python benchmarks/gpu/nf4_vs_bf16.py --video .carry/media/real/big_buck_bunny_0_30.webm \
        --work /tmp/nf4 --scenes 64 --batch 0 32 [--model llava-v1.6-mistral-7b]

Needs bitsandbytes (carried as a wheel). Weights are random: every row says so.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

W2_SIZE = (672, 378)  # width, height: 16:9 frames at W2's size


def scene_frames(video: Path, out: Path, scenes: int) -> list[tuple[str, str]]:
    """Two W2-sized JPEGs per scene, taken from evenly spaced frames of ``video``."""
    import av

    out.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as container:
        images = [f.to_image().convert("RGB").resize(W2_SIZE) for f in container.decode(video=0)]
    step = max(1, len(images) // (2 * scenes))
    pairs = []
    for i in range(scenes):
        paths = []
        for j in (0, 1):
            k = ((2 * i + j) * step) % len(images)
            path = out / f"s{i:04d}_{j}.jpg"
            images[k].save(path, quality=90)
            paths.append(str(path))
        pairs.append((paths[0], paths[1]))
    return pairs


def save_random(name: str, target: Path) -> None:
    """The full-size architecture of registry model ``name`` with random bf16 weights, saved."""
    import torch

    from scenescribe.testing.stand_ins import build_random

    if (target / "config.json").exists():
        return
    model, processor = build_random(name, "cuda", "bfloat16")
    model.save_pretrained(target)
    processor.save_pretrained(target)
    del model
    gc.collect()
    torch.cuda.empty_cache()


def measure(name: str, weights: Path, quantization: str | None, batch: int,
            frames: list[tuple[str, str]]) -> dict[str, Any]:
    """Load ``weights`` through the registry's captioner, caption every scene, time it."""
    import torch

    from scenescribe import registry
    from scenescribe.captions.base import CaptionRequest
    from scenescribe.options import CaptionOptions
    from scenescribe.progress import NullProgress

    options = CaptionOptions(models=(name,), weights=str(weights), max_new_tokens=256,
                             min_new_tokens=256, dtype="bfloat16", quantization=quantization,
                             batch_size=batch)
    captioner = registry.create(name, "captioner", options=options, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    captioner.load()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    requests = [CaptionRequest(i, pair) for i, pair in enumerate(frames)]
    # Warm-up on two scenes: CUDA kernels and allocator pools of the first call are not timed.
    for _ in captioner.caption(requests[:2], NullProgress()):
        pass
    torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = sum(c.new_tokens for _, c in captioner.caption(requests, NullProgress()))
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    row = {"model": name, "weights": "random", "quantization": quantization or "bf16",
           "batch": batch or "auto", "scenes": len(frames), "load_s": round(load_s, 1),
           "caption_s": round(elapsed, 2), "s_per_scene": round(elapsed / len(frames), 3),
           "new_tokens": tokens, "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}
    captioner.unload()
    del captioner
    gc.collect()
    torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nf4"))
    parser.add_argument("--model", default="llava-v1.6-mistral-7b")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[0, 32], help="0: automatic")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--order", nargs="+", default=["bf16", "nf4"], choices=["bf16", "nf4"])
    args = parser.parse_args()
    frames = scene_frames(args.video, args.work / "frames", args.scenes)
    weights = args.work / "weights"
    start = time.perf_counter()
    save_random(args.model, weights)
    print(f"random {args.model} saved in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for quantization in (None if q == "bf16" else q for q in args.order):
        for batch in args.batch:
            rows.append(measure(args.model, weights, quantization, batch, frames))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n| weights | batch | s/scene | caption s | load s | peak GiB |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['quantization']} | {r['batch']} | {r['s_per_scene']} | {r['caption_s']} | "
              f"{r['load_s']} | {r['peak_gib']} |")


if __name__ == "__main__":
    main()
