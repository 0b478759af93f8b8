"""Word alignment's DTW for a W1-shaped batch (45 chunks of 225 tokens x 1,500 frames) in this
process and in a child (``speech.dtw_child``), alone and beside busy Python threads.

Every numpy (or torch) call in the DTW's loop releases the interpreter lock and takes it back;
beside threads that hold it (Stage 1's tracker, frame writers, stage threads) each retake waits
out their switch interval (5 ms by default). A child has a lock of its own.

    python benchmarks/bench_dtw.py [--chunks 45] [--busy 0 1 3] [--switch-ms 0.5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from scenescribe.speech.alignment import token_frames_batch
from scenescribe.speech.dtw_child import token_frames_apart


def busy(stop: threading.Event) -> None:
    """A thread that holds the interpreter lock whenever it runs, as pure Python does."""
    total = 0
    while not stop.is_set():
        total += sum(range(1000))


def timed(work: Callable[[], object], threads: int) -> float:
    stop = threading.Event()
    workers = [threading.Thread(target=busy, args=(stop,), daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=45)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--switch-ms", type=float, default=None,
                        help="the interpreter's switch interval (default: Python's 5 ms)")
    args = parser.parse_args()
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000)
    rng = np.random.default_rng(0)
    matrices = [rng.normal(size=(225, 1500)).astype(np.float32) for _ in range(args.chunks)]
    assert [f.tolist() for f in token_frames_apart(matrices)] == [
        f.tolist() for f in token_frames_batch(matrices)]
    print(f"{args.chunks} chunks of 225 x 1500, switch interval "
          f"{sys.getswitchinterval() * 1000:g} ms")
    for threads in args.busy:
        here = timed(lambda: token_frames_batch(matrices), threads)
        apart = timed(lambda: token_frames_apart(matrices), threads)
        print(f"beside {threads} busy thread(s): in this process {here:7.2f} s, "
              f"in a child {apart:6.2f} s")


if __name__ == "__main__":
    main()
