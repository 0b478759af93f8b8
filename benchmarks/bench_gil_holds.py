"""How long Stage 1's thread workloads hold the interpreter lock at a time, as a loop of small
torch calls (a Whisper batch's launches) sees it.

Each small torch call releases the interpreter lock and takes it back. Beside a thread that runs
Python, the take-back waits until that thread is asked to drop the lock (the switch interval)
and reaches a point where it can; a C call that holds the lock throughout (no release inside)
cannot be cut short, whatever the interval. For each workload below, run in a thread of its own,
the main thread times ``--calls`` tiny torch calls and prints their median, 99th percentile,
largest and total time, at the interpreter's switch interval and at ``--switch-us``.

    python benchmarks/bench_gil_holds.py [--calls 2000] [--switch-us 500] [--video PATH]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
VIDEO = SHARED / "media/real/intel_car-detection.mp4"


def python_loop(stop: threading.Event, _: Path) -> None:
    """Pure Python (the scheduler's and stages' bookkeeping, at worst)."""
    while not stop.is_set():
        sum(range(1000))


def decode_frames(stop: threading.Event, video: Path) -> None:
    """PyAV decoding to RGB arrays, as the frames stage's and tracker's decoders do."""
    import av

    while not stop.is_set():
        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                frame.to_ndarray(format="rgb24")
                if stop.is_set():
                    return


def encode_jpegs(stop: threading.Event, _: Path) -> None:
    """PIL JPEG encoding of 672x378 frames, as the frame writers do."""
    import io

    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (378, 672, 3), np.uint8))
    while not stop.is_set():
        image.save(io.BytesIO(), format="JPEG", quality=90)


def track_matching(stop: threading.Event, _: Path) -> None:
    """ByteTrack's association: IoU over boxes in numpy, then ``lap.lapjv``."""
    import lap

    rng = np.random.default_rng(0)
    while not stop.is_set():
        a, b = rng.random((60, 4)), rng.random((60, 4))
        lo = np.maximum(a[:, None, :2], b[None, :, :2])
        hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
        cost = 1 - np.clip(hi - lo, 0, None).prod(-1)
        lap.lapjv(cost, extend_cost=True, cost_limit=0.8)


WORKLOADS: dict[str, Callable[[threading.Event, Path], None]] = {
    "alone": lambda stop, _: stop.wait(),
    "python": python_loop,
    "pyav-decode": decode_frames,
    "pil-jpeg": encode_jpegs,
    "bytetrack-match": track_matching,
}


def timed_calls(calls: int) -> np.ndarray:
    """Seconds per tiny torch call (each releases and retakes the interpreter lock)."""
    x = torch.zeros(8)
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        torch.add(x, 1.0, out=x)
        times[i] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--switch-us", type=int, default=500)
    parser.add_argument("--video", type=Path, default=VIDEO)
    args = parser.parse_args()
    torch.set_num_threads(1)
    default = sys.getswitchinterval()
    print(f"{args.calls} calls of torch.add on 8 floats beside one thread of each workload")
    print("workload, switch interval: median / p99 / max per call (ms), total (s)")
    for name, work in WORKLOADS.items():
        for interval in (default, args.switch_us / 1e6):
            sys.setswitchinterval(interval)
            stop = threading.Event()
            thread = threading.Thread(target=work, args=(stop, args.video), daemon=True)
            thread.start()
            time.sleep(0.3)  # the workload under way
            try:
                times = timed_calls(args.calls) * 1e3
            finally:
                stop.set()
                thread.join()
                sys.setswitchinterval(default)
            print(f"{name:16s} {interval * 1e6:6.0f} us: {np.median(times):7.3f} / "
                  f"{np.percentile(times, 99):7.3f} / {times.max():7.2f} ms, "
                  f"{times.sum() / 1e3:6.2f} s")


if __name__ == "__main__":
    main()
