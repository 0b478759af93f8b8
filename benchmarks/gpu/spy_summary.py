"""Reads py-spy's raw output (``record --format raw --threads --idle``, as job_variants.sh's SPY
writes it) into seconds per function for the threads running a given stage function.

    python benchmarks/gpu/spy_summary.py OUT/spy.txt [--match YoloTracker] [--rate 50] [--top 40]
    python benchmarks/gpu/spy_summary.py OUT/spy.txt.gz --thread load-whisper   # one thread
    python benchmarks/gpu/spy_summary.py OUT/spy.txt --threads                  # every thread

Inclusive seconds (a function's own samples and its callees'), summed over the matching threads'
samples; idle samples (a wait on a lock, a queue, a condition) count, so a wait shows as such.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import re
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?):\d+\)$")


def short(frame: str) -> str:
    """``name (module file)`` without the line, the path cut to its last two parts."""
    found = FRAME.match(frame)
    if found is None:
        return frame
    parts = found["file"].split("/")
    return f"{found['name']} ({'/'.join(parts[-2:])})"


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return f.read().splitlines()


def summarise(path: Path, match: str, rate: float, top: int, thread: bool = False) -> str:
    """``match`` in a frame of each counted stack (``thread``: in its thread's name)."""
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in _lines(path):
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if not (match in frames[0] if thread else any(match in f for f in frames[1:])):
            continue
        n = int(count)
        total += n
        threads[frames[0]] += n
        for name in {short(f) for f in frames[1:]}:
            inclusive[name] += n
    lines = [f"threads running {match!r}: {len(threads)}, {total / rate:.2f} s of samples"]
    lines += [f"  {n / rate:7.2f} s  {thread}" for thread, n in threads.most_common()]
    lines += [f"{n / rate:7.2f} s  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def by_thread(path: Path, rate: float, top: int, leaves: int = 4) -> str:
    """Seconds of samples per thread (numbers in names dropped), with its commonest leaves: with
    ``--gil`` samples, who held the interpreter lock."""
    threads: collections.Counter[str] = collections.Counter()
    leaf: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in _lines(path):
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        name = re.sub(r"\s*\(\d+\)", "", frames[0])
        threads[name] += int(count)
        leaf[name][short(frames[-1])] += int(count)
    lines = [f"{sum(threads.values()) / rate:.2f} s of samples"]
    for name, n in threads.most_common(top):
        lines.append(f"{n / rate:7.2f} s  {name}")
        lines += [f"           {k / rate:6.2f}  {f}" for f, k in leaf[name].most_common(leaves)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spy", type=Path)
    parser.add_argument("--match", default="YoloTracker", help="a frame every counted stack holds")
    parser.add_argument("--rate", type=float, default=50.0, help="py-spy's samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--thread", help="count the threads whose name holds this instead")
    parser.add_argument("--threads", action="store_true", help="seconds per thread")
    args = parser.parse_args()
    if args.threads:
        print(by_thread(args.spy, args.rate, args.top))
    elif args.thread:
        print(summarise(args.spy, args.thread, args.rate, args.top, thread=True))
    else:
        print(summarise(args.spy, args.match, args.rate, args.top))


if __name__ == "__main__":
    main()
