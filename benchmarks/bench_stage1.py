#!/usr/bin/env python
"""Per-component Stage 1 RTF on CPU (W3): shots, frames, speech, sounds, objects.

Runs the pipeline from scratch (``force``) on each clip, several times, and prints the median
load time and compute time of each component with RTF = compute / duration. Model load time is
reported apart and never counted in RTF. Speed claims come from this script, not from tests.

    python benchmarks/bench_stage1.py [--runs 3] [--clips real/intel_one-by-one-person-detection.mp4 ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import scenescribe
from scenescribe.options import RunOptions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = ("real/intel_one-by-one-person-detection.mp4", "real/big_buck_bunny_0_30.webm")
COMPONENTS = ("shots", "frames", "speech", "sounds", "objects")


def measure(clip: Path, runs: int, options: RunOptions) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {}
    duration = 0.0
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            result = scenescribe.run(clip, out, options, force=True)
            video = result.videos[0]
            if not video.ok:
                raise SystemExit(f"{clip}: {video.error}")
            duration = video.duration
            for stage, t in video.timings.items():
                s = samples.setdefault(stage, {"load_s": [], "compute_s": []})
                s["load_s"].append(t["load_s"])
                s["compute_s"].append(t["compute_s"])
    return {stage: {"load_s": statistics.median(v["load_s"]),
                    "compute_s": statistics.median(v["compute_s"]),
                    "rtf": statistics.median(v["compute_s"]) / duration,
                    "duration": duration} for stage, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, default=Path(os.environ.get(
        "SCENESCRIBE_SHARED", ROOT.parent / "shared")) / "media")
    parser.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    options = RunOptions(device="cpu")
    print(f"CPU cores: {os.cpu_count()}; median of {args.runs} runs; RTF = compute / duration")
    print(f"{'clip':42} {'component':10} {'load s':>8} {'compute s':>10} {'RTF':>8}")
    for rel in args.clips:
        rows = measure(args.media / rel, args.runs, options)
        total = sum(r["compute_s"] for r in rows.values())
        for stage in COMPONENTS:
            if stage in rows:
                r = rows[stage]
                print(f"{rel:42} {stage:10} {r['load_s']:8.2f} {r['compute_s']:10.2f} "
                      f"{r['rtf']:8.4f}")
        duration = next(iter(rows.values()))["duration"]
        print(f"{rel:42} {'all':10} {'':8} {total:10.2f} {total / duration:8.4f}")


if __name__ == "__main__":
    main()
