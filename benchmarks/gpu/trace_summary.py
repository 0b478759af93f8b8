"""What Whisper's phases wait for, from ``cuda_window.py``'s trace of one batch in a whole job.

    python3 benchmarks/gpu/trace_summary.py TRACE_OUT

For each phase (encode, decode, align, dtw, ...) on the speech thread: its wall seconds split
into the speech stream's kernel time, the time its kernels were ready (launched, previous kernel
done) but not yet running (the GPU busy with the other streams' kernels), and the rest (nothing
ready: the thread was launching, waiting for the interpreter lock or the CPU, or syncing). Then
the speech thread's CUDA runtime calls by name, the other streams' busy time and top kernels
during the phase, and for the whole window each thread's and each stream's totals.
"""

from __future__ import annotations

import bisect
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _load(folder: Path) -> tuple[list[dict[str, Any]], float, list[dict[str, Any]], dict[str, str]]:
    trace = json.loads((folder / "trace.json").read_text())
    base = trace.get("baseTimeNanoseconds", 0) / 1e9
    phases = json.loads((folder / "phases.json").read_text())
    threads = json.loads((folder / "threads.json").read_text())
    return trace["traceEvents"], base, phases, threads


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _clip(spans: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in spans if b > lo and a < hi]


def main(folder: Path) -> None:
    events, base, phases, threads = _load(folder)
    kernels: dict[Any, list[dict[str, Any]]] = defaultdict(list)  # stream -> kernels
    runtime: dict[Any, list[dict[str, Any]]] = defaultdict(list)  # thread -> runtime calls
    launch_end: dict[Any, float] = {}
    for e in events:
        if e.get("ph") != "X":
            continue
        cat = e.get("cat", "")
        e["t0"] = base + e["ts"] / 1e6
        e["t1"] = e["t0"] + e.get("dur", 0) / 1e6
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            kernels[e["args"].get("stream", e.get("tid"))].append(e)
        elif cat in ("cuda_runtime", "cuda_driver"):
            runtime[e.get("tid")].append(e)
            corr = e.get("args", {}).get("correlation")
            if corr is not None:
                launch_end[corr] = e["t1"]
    for spans in kernels.values():
        spans.sort(key=lambda k: k["t0"])
    if not phases or not kernels:
        print(f"nothing to read: {len(phases)} phases, {len(kernels)} streams with kernels")
        return
    speech_tid = phases[0]["tid"]
    decode = [p for p in phases if p["name"] == "decode"]
    # Whisper's stream: the one with the most kernels inside the decode phases.
    def count_in(stream: Any, spans: list[dict[str, Any]]) -> int:
        return sum(1 for k in kernels[stream] for p in spans if p["start"] <= k["t0"] <= p["end"])
    speech_stream = max(kernels, key=lambda s: count_in(s, decode or phases))
    print(f"window {phases[0]['start']:.3f} -> {phases[-1]['end']:.3f} "
          f"({phases[-1]['end'] - phases[0]['start']:.2f} s); speech thread {speech_tid} "
          f"({threads.get(str(speech_tid), '?')}), speech stream {speech_stream}")
    mine = kernels[speech_stream]
    if speech_tid not in runtime:
        # CUPTI may name threads otherwise: take the one that launched the stream's kernels.
        ours = {k.get("args", {}).get("correlation") for k in mine}
        launched = {t: sum(1 for r in rs if r.get("args", {}).get("correlation") in ours)
                    for t, rs in runtime.items()}
        found = max(launched, key=lambda t: launched[t])
        print(f"  (runtime calls name threads otherwise: {found} launched the speech stream's "
              "kernels and stands for the speech thread)")
        for p in phases:
            p["tid"] = found
    starts = [k["t0"] for k in mine]
    for p in phases:
        lo, hi = p["start"], p["end"]
        wall = hi - lo
        first, last = bisect.bisect_left(starts, lo), bisect.bisect_right(starts, hi)
        busy = queued = 0.0
        prev_end = lo
        for k in mine[first:last]:
            ready = max(prev_end, launch_end.get(k.get("args", {}).get("correlation"), lo), lo)
            queued += max(0.0, k["t0"] - ready)
            busy += min(k["t1"], hi) - k["t0"]
            prev_end = max(prev_end, k["t1"])
        calls: dict[str, float] = defaultdict(float)
        for r in runtime.get(p["tid"], runtime.get(str(p["tid"]), [])):
            if r["t1"] > lo and r["t0"] < hi:
                calls[r["name"]] += min(r["t1"], hi) - max(r["t0"], lo)
        others = {s: _union(_clip([(k["t0"], k["t1"]) for k in ks], lo, hi))
                  for s, ks in kernels.items() if s != speech_stream}
        other_all = _union([span for s, ks in kernels.items() if s != speech_stream
                            for span in _clip([(k["t0"], k["t1"]) for k in ks], lo, hi)])
        print(f"\n{p['name']:8s} {wall:7.3f} s: speech kernels {last - first} running "
              f"{busy:.3f} s, ready but waiting {queued:.3f} s, nothing ready "
              f"{max(0.0, wall - busy - queued):.3f} s; other streams busy {other_all:.3f} s")
        top_calls = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        print("   speech thread's CUDA calls: " + ", ".join(f"{n} {s:.3f}" for n, s in top_calls))
        by_name: dict[str, float] = defaultdict(float)
        for s, ks in kernels.items():
            if s == speech_stream:
                continue
            for k in ks:
                if k["t1"] > lo and k["t0"] < hi:
                    by_name[f"[{s}] {k['name'][:60]}"] += min(k["t1"], hi) - max(k["t0"], lo)
        for s, v in sorted(others.items(), key=lambda kv: -kv[1])[:4]:
            print(f"   stream {s}: busy {v:.3f} s")
        for name, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:5]:
            print(f"     {v:7.3f} s  {name}")
        # Calls that can hold up every thread (allocator frees, device or host syncs) show here.
        longest = sorted((r for calls_list in runtime.values() for r in calls_list
                          if r["t1"] > lo and r["t0"] < hi), key=lambda r: -r["dur"])[:6]
        print("   longest CUDA calls of any thread: " + ", ".join(
            f"{r['name']} {r['dur'] / 1e3:.1f} ms ({threads.get(str(r['tid']), r['tid'])})"
            for r in longest))
    print("\nwhole window, per thread: CUDA runtime seconds (top calls)")
    for tid, calls_list in sorted(runtime.items(), key=lambda kv: -sum(r["dur"] for r in kv[1])):
        sums: dict[str, float] = defaultdict(float)
        for r in calls_list:
            sums[r["name"]] += r["dur"] / 1e6
        top = sorted(sums.items(), key=lambda kv: -kv[1])[:4]
        print(f"  {tid} ({threads.get(str(tid), '?')}): {sum(sums.values()):.3f} s, "
              f"{len(calls_list)} calls: " + ", ".join(f"{n} {s:.3f}" for n, s in top))
    print("\nwhole window, per stream: kernels, busy seconds, top kernels")
    for s, ks in sorted(kernels.items(), key=lambda kv: -len(kv[1])):
        sums = defaultdict(float)
        for k in ks:
            sums[k["name"][:50]] += k.get("dur", 0) / 1e6
        top = sorted(sums.items(), key=lambda kv: -kv[1])[:3]
        print(f"  stream {s}: {len(ks)} kernels, busy {_union([(k['t0'], k['t1']) for k in ks]):.3f}"
              " s: " + "; ".join(f"{n} {v:.3f}" for n, v in top))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
