"""Where one caption batch's time goes: preprocessing, prefill, and each decode step's CPU and GPU.

Runs on the GPU machine (the device tool) from the repository root, after the wheels are
installed (see ``w1_bench.sh``), with random full-size weights, or anywhere with ``--weights``
(a checkpoint folder; on CPU a tiny one checks the script):

    PYTHONPATH=/tmp/site:$PWD/src python3 benchmarks/gpu/profile_captions.py \\
        --video .carry/media/real/big_buck_bunny_0_30.webm --scenes 64 --out OUT.json

One batch of ``--scenes`` W2-shaped scenes (two 672x378 frames each) is prepared on the CPU
(timed), warmed up, then generated at 1 new token (prefill) and at ``--tokens`` new tokens: the
difference over the extra tokens is the seconds per decode step. A torch profile of
``--profile-steps`` decode steps gives, per step, the CPU time spent issuing work and the GPU time
of the kernels it issued, and the costliest operators by each. A step whose CPU time is near its
wall time while its GPU time is well below it is bound by launches and Python, not by the GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nf4_vs_bf16 import scene_frames

from scenescribe.bench import sync_device


def timed_generate(captioner: Any, inputs: Any, steps: int, device: str) -> float:
    sync_device(device)
    start = time.perf_counter()
    captioner.short_generate(inputs, steps)
    sync_device(device)
    return time.perf_counter() - start


def top(events: Any, key: str, count: int = 12) -> list[dict[str, Any]]:
    """The ``count`` operators with the most ``key`` time (microseconds), as plain rows."""
    rows = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:count]
    return [{"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
             "device_ms": round(getattr(e, "self_device_time_total", 0.0) / 1e3, 2)}
            for e in rows]


def profile_steps(captioner: Any, inputs: Any, steps: int, device: str) -> dict[str, Any]:
    """A torch profile of a generate of 1 + ``steps`` tokens, minus one of 1 token (prefill)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    totals = {}
    for label, tokens in (("prefill", 1), ("prefill+steps", 1 + steps)):
        with profile(activities=activities) as prof:
            wall = timed_generate(captioner, inputs, tokens, device)
        events = prof.key_averages()
        totals[label] = {
            "wall_s": wall,
            "cpu_s": sum(e.self_cpu_time_total for e in events) / 1e6,
            "device_s": sum(getattr(e, "self_device_time_total", 0.0) for e in events) / 1e6,
            "by_cpu": top(events, "self_cpu_time_total"),
            "by_device": top(events, "self_device_time_total"),
        }
    per_step = {k: (totals["prefill+steps"][k] - totals["prefill"][k]) / steps
                for k in ("wall_s", "cpu_s", "device_s")}
    return {"per_step": per_step, **totals}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/profile-captions"))
    parser.add_argument("--model", default="llava-v1.6-mistral-7b")
    parser.add_argument("--weights", help="a checkpoint folder (default: random full-size)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128, help="new tokens of the timed run")
    parser.add_argument("--profile-steps", type=int, default=16)
    parser.add_argument("--cache", default="dynamic", choices=("dynamic", "static"))
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args()

    from scenescribe import registry
    from scenescribe.captions.base import CaptionRequest
    from scenescribe.options import CaptionOptions

    frames = scene_frames(args.video, args.work / "frames", args.scenes)
    options = CaptionOptions(models=(args.model,), weights=args.weights,
                             random_weights=args.weights is None, max_new_tokens=args.tokens,
                             min_new_tokens=args.tokens, batch_size=args.scenes, cache=args.cache,
                             dtype="bfloat16" if args.device.startswith("cuda") else "float32")
    captioner: Any = registry.create(args.model, "captioner", options=options, device=args.device,
                                     model_dir=None)
    start = time.perf_counter()
    captioner.load()
    sync_device(args.device)
    result: dict[str, Any] = {"model": args.model, "device": args.device, "scenes": args.scenes,
                              "cache": args.cache, "packed": getattr(captioner, "_packed", []),
                              "decoder": captioner.facts().get("decoder"),
                              "load_s": time.perf_counter() - start}
    batch = [CaptionRequest(i, pair) for i, pair in enumerate(frames)]
    start = time.perf_counter()
    inputs = captioner.prepare(batch)
    result["prepare_s"] = time.perf_counter() - start
    result["prompt_tokens"] = int(inputs["input_ids"].shape[1])
    timed_generate(captioner, inputs, 4, args.device)  # warm-up: kernels chosen, memory grown
    prefill = timed_generate(captioner, inputs, 1, args.device)
    full = timed_generate(captioner, inputs, args.tokens, args.device)
    result.update(prefill_s=prefill, generate_s=full,
                  step_s=(full - prefill) / max(args.tokens - 1, 1),
                  s_per_scene=(result["prepare_s"] + full) / args.scenes)
    if args.device.startswith("cuda"):
        import torch

        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["profile"] = profile_steps(captioner, inputs, args.profile_steps, args.device)
    step = result["profile"]["per_step"]
    print(f"{args.model} (decoder {result['decoder']}, {args.cache} cache for generate, packed "
          f"{result['packed'] or 'none'}): "
          f"{args.scenes} scenes of {result['prompt_tokens']} prompt tokens; prepare "
          f"{result['prepare_s']:.2f} s, prefill {prefill:.2f} s, {args.tokens} tokens "
          f"{full:.2f} s, {result['step_s'] * 1e3:.1f} ms per step, "
          f"{result['s_per_scene']:.3f} s/scene")
    print(f"profiled step: wall {step['wall_s'] * 1e3:.1f} ms, operators' CPU "
          f"{step['cpu_s'] * 1e3:.1f} ms (the rest of the wall: Python between them, or "
          f"waiting), GPU {step['device_s'] * 1e3:.1f} ms")
    for key in ("by_cpu", "by_device"):
        print(f"\ncostliest operators over prefill + {args.profile_steps} steps ({key}):")
        for row in result["profile"]["prefill+steps"][key]:
            print(f"  {row['op'][:60]:60s} {row['calls']:7d} calls  CPU {row['self_cpu_ms']:9.1f} "
                  f"ms  GPU {row['device_ms']:9.1f} ms")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
