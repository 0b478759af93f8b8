"""Dynamic time warping for a batch of alignment matrices in a process of its own.

The batched DTW (``alignment.token_frames_batch``) is about 2,000 numpy calls in a loop over
rows, and each call releases the interpreter lock and takes it back. In Stage 1 other threads of
the process (the tracker's ByteTrack, the frame writers, the stage threads) are busy, and each
retake waits out their switch interval: on this project's CPU machine W1's 45 chunks took
0.4 s alone and 9-47 s beside one busy Python thread (``benchmarks/bench_dtw.py``). A child has
a lock of its own. Small batches stay in this process, where a child's start (0.2-0.3 s, numpy
imported) would cost more than the warping.

The matrices go to the child and the frames come back as ``.npz`` files in a private
temporary folder (no pickles either way); the job is their two paths as JSON on stdin
(``workers.worker_process``). A child that fails is logged once, and this batch and every
later one is warped here.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scenescribe.speech.alignment import token_frames_batch
from scenescribe.workers import worker_process

log = logging.getLogger("scenescribe.speech")

MODULE = "scenescribe.speech.dtw_child"
CHILD_CELLS = 1_000_000  # matrix cells from which a batch is warped in a child (3 full chunks)


_failed: list[str] = []  # why the first child failed: later batches are warped here


def token_frames_apart(matrices: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``token_frames_batch(matrices)``, computed in a child process when the batch is large."""
    if sum(m.size for m in matrices) < CHILD_CELLS or _failed:
        return token_frames_batch(matrices)
    with tempfile.TemporaryDirectory(prefix="scenescribe-dtw-") as folder:
        given, taken = Path(folder) / "matrices.npz", Path(folder) / "frames.npz"
        np.savez(given, *matrices)
        with worker_process(MODULE, {"matrices": str(given), "frames": str(taken)},
                            stdout=subprocess.DEVNULL) as worker:
            status = worker.process.wait()
            failure = worker.failure() if status else ""
        if not status:
            try:
                with np.load(taken, allow_pickle=False) as found:
                    frames = [found[f"arr_{i}"] for i in range(len(found.files))]
                if len(frames) == len(matrices):
                    return frames
                failure = f"{len(frames)} results for {len(matrices)} matrices"
            except (OSError, ValueError, KeyError) as exc:
                failure = str(exc)
    _failed.append(failure)
    log.warning("word alignment in a child process failed (%s); aligning in this process from "
                "now on", failure)
    return token_frames_batch(matrices)


def main() -> None:
    job = json.loads(sys.stdin.read())
    with np.load(job["matrices"], allow_pickle=False) as given:
        matrices = [given[f"arr_{i}"] for i in range(len(given.files))]
    np.savez(job["frames"], *token_frames_batch(matrices))


if __name__ == "__main__":
    main()
