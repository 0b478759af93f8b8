"""The speech stage's pooled audio reader, alone and beside busy threads: in-process vs child.

In Stage 1 the reader (``pool.transcribe_pooled``'s thread) shares the job process with the
frames, sound-tagging and tracking threads. This times what it does there: the pooled stream
over the given videos with a decode that does nothing (no model), so the figures are the
reader's own, ``AudioReads.seconds`` per video and the time until it finished them all.

Readers: ``inproc`` is the old reader (``SCENESCRIBE_AUDIO_READERS=0``: ``speech_chunks`` on the
pool's thread), ``child1`` and ``child2`` read in child processes (``audio_child``), one or two
at once. Contention (``--busy``, ``--decoders``): threads looping in pure Python (the GIL's
worst case), and threads decoding video frames with PyAV into numpy as the frames and
tracking stages do (``iter_frames`` at 640 px).

    python scripts/make_w1_suite.py --out /tmp/w1 --media ../shared/media --jobs 4
    PYTHONPATH=src python benchmarks/bench_audio_read.py /tmp/w1/*.mp4 --busy 2 --decoders 2

Measured on a 2-CPU machine (W1: cooking, football, interview, sitcom; wall seconds until the
reader finished all four): alone, inproc 4.6-5.0, child1 5.3-5.8, child2 5.3-7.4 (a child's
start, 0.3-1 s of imports, is the difference); beside 2 busy + 2 decode threads, inproc 37-45,
child1 13.5-18.6, child2 7.4-9.3; beside 3 busy threads, inproc 265 (sitcom alone 210), child1
12.9, child2 11.4. A plain ``speech_chunks`` loop in a process of its own, beside another
process running 3 busy threads, took 10.4 s: on 2 CPUs most of what remains is CPU, not GIL.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scenescribe import registry
from scenescribe.media import iter_frames, probe
from scenescribe.options import SpeechOptions
from scenescribe.progress import NullProgress
from scenescribe.speech.base import AudioReads
from scenescribe.speech.whisper_parts import Decoded

READERS = {"inproc": 0, "child1": 1, "child2": 2}


def busy_python(stop: threading.Event) -> None:
    """A pure-Python loop: holds the GIL for whole switch intervals."""
    while not stop.is_set():
        total = 0
        for i in range(10_000):
            total += i * i


def decoding(path: Path) -> Callable[[threading.Event], None]:
    """Decode ``path``'s frames at 640 px, again and again, as a frames thread does."""
    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            for frame in iter_frames(path, width=640):
                frame.image.mean()  # a little numpy per frame, as the stages do
                if stop.is_set():
                    return
    return run


def read_all(paths: list[Path], readers: int) -> tuple[dict[int, float], float]:
    """The pooled stream over ``paths`` with no model: per-video read seconds, and the wall
    seconds until the reader finished the last video."""
    os.environ["SCENESCRIBE_AUDIO_READERS"] = str(readers)
    recognizer = registry.create("whisper-tiny.en", "speech",
                                 options=SpeechOptions(batch_size=64), device="cpu")
    recognizer.decode = lambda batch: [Decoded([], "", "en", 1.0, 1.0, -9.0) for _ in batch]
    reads = AudioReads()
    infos = [(probe(p), NullProgress()) for p in paths]
    start = time.perf_counter()
    results = dict(recognizer.transcribe_many(infos, reads))
    failed = [paths[i].name for i, r in results.items() if isinstance(r, Exception)]
    if failed:
        raise SystemExit(f"reading failed: {failed}")
    assert reads.finished_at is not None
    return reads.seconds, reads.finished_at - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", type=Path, nargs="+")
    parser.add_argument("--readers", nargs="+", default=list(READERS), choices=list(READERS))
    parser.add_argument("--busy", type=int, default=2, help="pure-Python threads")
    parser.add_argument("--decoders", type=int, default=1, help="frame-decoding threads")
    parser.add_argument("--alone", action="store_true", help="also time with no contention")
    args = parser.parse_args()
    names = [p.stem for p in args.videos]
    print(f"{os.cpu_count()} CPUs; videos: {', '.join(names)}")
    print(f"{'reader':8} {'contention':22} " + " ".join(f"{n[:12]:>12}" for n in names)
          + f" {'sum':>7} {'wall':>7}")
    settings = [(0, 0)] if args.alone else []
    settings.append((args.busy, args.decoders))
    for busy, decoders in settings:
        for name in args.readers:
            stop = threading.Event()
            loads = [busy_python] * busy + [decoding(args.videos[k % len(args.videos)])
                                            for k in range(decoders)]
            threads = [threading.Thread(target=f, args=(stop,), daemon=True) for f in loads]
            for t in threads:
                t.start()
            time.sleep(0.5 if threads else 0.0)  # the contention under way first
            try:
                seconds, wall = read_all(args.videos, READERS[name])
            finally:
                stop.set()
                for t in threads:
                    t.join()
            label = f"{busy} busy + {decoders} decode" if threads else "alone"
            print(f"{name:8} {label:22} " + " ".join(f"{seconds.get(i, 0.0):12.2f}"
                                                     for i in range(len(names)))
                  + f" {sum(seconds.values()):7.2f} {wall:7.2f}", flush=True)


if __name__ == "__main__":
    main()
