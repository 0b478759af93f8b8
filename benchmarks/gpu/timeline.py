"""Print a whole-job bench.json's timeline: the job's wall clock, each stage's start and end,
and each video's seconds per stage (what the frames add after the last shots are found).

    python3 benchmarks/gpu/timeline.py OUT/local/bench.json [MORE.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def show(path: Path) -> None:
    data = json.loads(path.read_text())
    job = data["job"]
    retries = job.get("alloc_retries")
    print(f"== {path}: job {job['wall_s']:.1f} s, stage 1 done at {job['stage1_wall_s']:.1f} s, "
          f"{job['scenes']} scenes"
          + (f", {retries} CUDA allocator retries" if retries is not None else ""))
    stages = {s["stage"]: s for s in job["stages"]}
    for name, s in sorted(stages.items(), key=lambda kv: kv[1].get("from_s", 0.0)):
        details = "".join(f"   {k[:-2]} {s[k]:.2f} s" for k in
                          ("prepare_wait_s", "generate_s", "audio_read_s", "encode_s",
                           "decode_s", "align_s", "words_s") if k in s)
        print(f"  {name:32s} {s.get('from_s', 0.0):7.1f} -> {s.get('to_s', 0.0):7.1f}"
              f"   compute {s['compute_s']:7.2f} s   load {s['load_s']:6.2f} s{details}")
    if "shots" in stages and "frames" in stages:
        after = stages["frames"]["to_s"] - stages["shots"]["to_s"]
        print(f"  frames end {after:.2f} s after the last shots")
    keys = ("shots_s", "frames_s", "sounds_s", "detections_s", "objects_s")
    for video in data.get("stage1") or []:
        print(f"  {video['video']:14s} " + "  ".join(
            f"{k[:-2]} {video.get(k, 0.0):6.2f}" for k in keys)
            + ("  (detector's frames from the shots' decode)"
               if video.get("detections_spooled") else ""))
        if "speech_audio_read_s" in video:  # the pooled speech stream's reader
            print(f"  {'':14s} speech audio read {video['speech_audio_read_s']:6.2f} s, "
                  f"then waited {video.get('speech_model_wait_s', 0.0):6.2f} s for the model")
    first = (data.get("stage1") or [{}])[0]
    imports = [k[:-len("_load_imports_s")] for k in first if k.endswith("_load_imports_s")]
    if imports:  # each load's imports: seconds, CPU seconds, times blocked and preempted
        print("  loads' imports: " + "  ".join(
            f"{k} {first[f'{k}_load_imports_s']:.2f} s"
            + (f" (cpu {first[f'{k}_load_imports_cpu_s']:.2f} s, blocked "
               f"{first.get(f'{k}_load_imports_blocked', 0):.0f}, preempted "
               f"{first.get(f'{k}_load_imports_preempted', 0):.0f})"
               if f"{k}_load_imports_cpu_s" in first else "") for k in imports))
        device = {k: first[f"{k}_load_device_s"] for k in imports if f"{k}_load_device_s" in first}
        if device:
            print("  loads' device start-up: "
                  + "  ".join(f"{k} {v:.2f} s" for k, v in device.items()))
    cpu = job.get("cpu") or {}
    if cpu.get("busy"):  # the share of all cores busy, averaged over 5 s windows
        per = max(1, round(5.0 / cpu["interval_s"]))
        busy = cpu["busy"]
        windows = [sum(busy[i:i + per]) / len(busy[i:i + per]) for i in range(0, len(busy), per)]
        print(f"  CPUs busy (% of {cpu['cores']}, per 5 s): "
              + " ".join(f"{100 * w:.0f}" for w in windows)
              + f"; the job's own {cpu['job_cpu_s']:.0f} + children {cpu['children_cpu_s']:.0f}"
              f" CPU-s ({100 * cpu['job_share']:.0f}% of all cores)")
    done = job.get("videos_done_s") or {}
    if done:
        print("  when each video's outcome came (s on the job's clock):")
    for video, stages in done.items():
        print(f"  {Path(video).stem:14s} " + "  ".join(
            f"{name.split('[')[0]} {t:6.1f}" for name, t in stages.items()))


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        show(Path(arg))
