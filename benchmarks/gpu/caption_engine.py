"""The caption engine's levers, one fresh process each: batch cap, warm-up, prefetch, tuner.

Runs on the GPU machine (the device tool). Each variant runs in its own Python process, because
what the warm-up removes is a cost paid by the first large batch *in a process*. A variant
captions the same W2-shaped scenes (two 672x378 frames each, the reference's prompt, exactly
``--tokens`` new tokens, random full-size weights in bf16) and is timed as a job pays it:
one clock around ``caption()``, preprocessing, warm-up and generation included. Printed: one
JSON line per variant and a markdown table (s/scene, batch run, load, peak GiB).

    python benchmarks/gpu/caption_engine.py --video .carry/media/real/big_buck_bunny_0_30.webm \
        --scenes 192 --variants plain warm prefetch engine tuner cap96 --json OUT.json

Variants: plain (cap 64, no warm-up, no prefetch: the engine before issue 12), warm (+ warm-up),
prefetch (+ preprocessing on a thread, no warm-up), engine (warm-up + prefetch: the default),
tuner (engine + ``adaptive_batch``: 64 against 32), capN (engine with ``max_batch = N``),
unpacked (engine with transformers' own SDPA: each decoding step copies the cache per query
head), static (engine with the preallocated KV cache), static-X (X with the static cache).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nf4_vs_bf16 import scene_frames

from scenescribe.attention import PACKED_ENV

FIXED = ("plain", "warm", "prefetch", "engine", "tuner", "unpacked", "static", "graph",
         "stepwise")


def settings(variant: str) -> dict[str, Any]:
    """What a variant changes: warm-up tokens, prefetch, max_batch, adaptive_batch, the KV
    cache, whether grouped heads are packed for decoding (``pack``), and the decoder:
    transformers' ``generate`` unless the variant is ``graph`` (``static_decode`` with a CUDA
    graph per step), ``stepwise`` (the same step without graphs) or ``graph-X``."""
    if variant.startswith("static-"):
        return {**settings(variant[len("static-"):]), "cache": "static"}
    if variant.startswith("graph-"):
        return {**settings(variant[len("graph-"):]), "decoder": "graph"}
    base = {"warm_up_tokens": 4, "prefetch": True, "max_batch": 64, "adaptive_batch": False,
            "cache": "dynamic", "pack": True, "decoder": "generate"}
    if variant == "graph":
        return {**base, "decoder": "graph"}
    if variant == "stepwise":
        return {**base, "decoder": "static"}
    if variant == "unpacked":
        return {**base, "pack": False}
    if variant == "static":
        return {**base, "cache": "static"}
    if variant == "plain":
        return {**base, "warm_up_tokens": 0, "prefetch": False}
    if variant == "warm":
        return {**base, "prefetch": False}
    if variant == "prefetch":
        return {**base, "warm_up_tokens": 0}
    if variant == "engine":
        return base
    if variant == "tuner":
        return {**base, "adaptive_batch": True}
    if variant.startswith("cap") and variant[3:].isdigit():
        return {**base, "max_batch": int(variant[3:])}
    raise SystemExit(f"unknown variant {variant!r}: {', '.join(FIXED)}, capN, static-X or "
                     f"graph-X")


def one(variant: str, model: str, frames: list[tuple[str, str]], tokens: int) -> dict[str, Any]:
    """One variant in this process."""
    import torch

    from scenescribe import registry
    from scenescribe.captions.base import CaptionRequest
    from scenescribe.captions.hf_base import TransformersCaptioner
    from scenescribe.options import CaptionOptions
    from scenescribe.progress import NullProgress

    s = settings(variant)
    TransformersCaptioner.warm_up_tokens = s["warm_up_tokens"]
    TransformersCaptioner.prefetch = s["prefetch"]
    options = CaptionOptions(models=(model,), max_new_tokens=tokens, min_new_tokens=tokens,
                             dtype="bfloat16", random_weights=True, max_batch=s["max_batch"],
                             adaptive_batch=s["adaptive_batch"], cache=s["cache"],
                             decoder=s["decoder"])
    captioner: Any = registry.create(model, "captioner", options=options, device="cuda")
    start = time.perf_counter()
    captioner.load()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    requests = [CaptionRequest(i, pair) for i, pair in enumerate(frames)]
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    new = sum(c.new_tokens for _, c in captioner.caption(requests, NullProgress()))
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tuner = captioner.tuner
    return {"variant": variant, **s, "model": model, "weights": "random", "scenes": len(frames),
            "batch": tuner.chosen or tuner.sizes[0],
            "trials": {str(k): round(tuner.per_scene(k), 4) for k in tuner.timings},
            "packed": getattr(captioner, "_packed", []),
            "decoder_used": captioner.facts().get("decoder"),
            "load_s": round(load_s, 1), "caption_s": round(elapsed, 2),
            "s_per_scene": round(elapsed / len(frames), 4), "new_tokens": new,
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/caption-engine"))
    parser.add_argument("--model", default="llava-v1.6-mistral-7b")
    parser.add_argument("--scenes", type=int, default=192)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--variants", nargs="+", default=["plain", "engine"])
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per variant")
    args = parser.parse_args()
    for variant in args.variants:
        settings(variant)  # a bad name fails before any work
    frames = scene_frames(args.video, args.work / "frames", args.scenes)
    if args.one:
        # Past its limit the child prints every thread's stack and exits, so the parent reports
        # where it hung instead of killing it without a word.
        faulthandler.dump_traceback_later(max(1.0, args.timeout - 10), exit=True)
        print("ROW " + json.dumps(one(args.one, args.model, frames, args.tokens)), flush=True)
        return
    rows = []
    for variant in args.variants:
        env = {**os.environ, PACKED_ENV: "1" if settings(variant)["pack"] else "0"}
        try:
            done = subprocess.run([sys.executable, __file__, "--video", str(args.video),
                                   "--work", str(args.work), "--model", args.model, "--scenes",
                                   str(args.scenes), "--tokens", str(args.tokens), "--one",
                                   variant, "--timeout", str(args.timeout)],
                                  capture_output=True, text=True, env=env, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{variant}: over {args.timeout:.0f} s, stopped", flush=True)
            continue
        found = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
        if done.returncode or not found:
            print(f"{variant}: failed ({done.returncode}): {done.stderr[-2000:]}", flush=True)
            continue
        rows.append(json.loads(found[0]))
        print(found[0], flush=True)
        if args.json:  # after every variant: a later one that hangs loses nothing
            args.json.write_text(json.dumps(rows, indent=1))
    print("\n| variant | batch | s/scene | caption s | load s | peak GiB | trials |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['batch']} | {r['s_per_scene']} | {r['caption_s']} | "
              f"{r['load_s']} | {r['peak_gib']} | {r['trials'] or '-'} |")


if __name__ == "__main__":
    main()
