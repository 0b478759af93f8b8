"""A model load beside a busy Python thread, at the default switch interval and under
``switch_interval.short_switches`` (what ``Backend.load`` holds), or beside busy processes.

Each case runs in a fresh interpreter (imports are once per process): importing torch, then
transformers' Whisper class, then ``from_pretrained`` of a small Whisper checkpoint; alone,
beside one thread running pure Python, beside it with ``short_switches`` held (the interval
``SCENESCRIBE_LOAD_SWITCH_US``, 500 us unless set), and beside ``--procs`` processes spinning at
nice 5, 10 or 19 (``procs-nice5`` ...: the shot detector's segment decoders are two per core at
nice 5 while Whisper's load imports transformers). Prints each phase's seconds, the loading
thread's CPU seconds, how often it waited (voluntary context switches) and how often it was
preempted (involuntary ones).

    .venv/bin/python benchmarks/bench_load_gil.py ../shared/models/whisper/hf-whisper-tiny.en
    python3 benchmarks/bench_load_gil.py CHECKPOINT --cases alone procs-nice5 procs-nice19
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

CASES = ("alone", "busy", "busy+short", "procs-nice5", "procs-nice10", "procs-nice19")
PHASES = ("torch", "transformers", "load")


def _child(case: str, checkpoint: str) -> None:
    import contextlib

    from scenescribe.phases import PhaseClock
    from scenescribe.switch_interval import short_switches

    stop = threading.Event()

    def spin() -> None:
        total = 0
        while not stop.is_set():
            for i in range(1000):
                total += i

    if case in ("busy", "busy+short"):
        threading.Thread(target=spin, daemon=True).start()
        time.sleep(0.2)
    clock = PhaseClock()
    with short_switches() if case == "busy+short" else contextlib.nullcontext():
        with clock.phase("torch"):
            import torch  # noqa: F401
        with clock.phase("transformers"):
            from transformers import WhisperForConditionalGeneration
        with clock.phase("load"):
            WhisperForConditionalGeneration.from_pretrained(checkpoint)
    stop.set()
    print(json.dumps(clock.seconds()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a transformers Whisper checkpoint folder")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--procs", type=int, default=2 * (os.cpu_count() or 1),
                        help="busy processes of the procs-* cases (default: two per core)")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.checkpoint)
        return
    print("case          " + "  ".join(f"{p + ' s':>15s} {'cpu s':>6s} {'waits':>6s} {'preempt':>7s}"
                                       for p in PHASES))
    for case in args.cases:
        spinners = _spinners(case, args.procs)
        try:
            out = subprocess.run([sys.executable, __file__, args.checkpoint, "--child", case],
                                 capture_output=True, text=True, check=True).stdout
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
        t = json.loads(out.strip().splitlines()[-1])
        print(f"{case:13s} " + "  ".join(
            f"{t[p + '_s']:15.2f} {t[p + '_cpu_s']:6.2f} {t[p + '_blocked']:6.0f} "
            f"{t[p + '_preempted']:7.0f}" for p in PHASES))


def _spinners(case: str, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes running pure Python at the case's nice value (none for the others)."""
    if not case.startswith("procs-nice"):
        return []
    nice = int(case.removeprefix("procs-nice"))
    code = f"import os; os.nice({nice})\nwhile True: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    time.sleep(0.5)
    return spinners


if __name__ == "__main__":
    main()
