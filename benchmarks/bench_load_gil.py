"""A model load beside a busy Python thread, at the default switch interval and under
``switch_interval.short_switches`` (what ``Backend.load`` holds).

Each case runs in a fresh interpreter (imports are once per process): importing torch and
transformers' Whisper class, then ``from_pretrained`` of a small Whisper checkpoint; alone,
beside one thread running pure Python, and beside it with ``short_switches`` held (the interval
``SCENESCRIBE_LOAD_SWITCH_US``, 500 us unless set). Prints each case's seconds, the loading
thread's CPU seconds and how often it waited (voluntary context switches).

    .venv/bin/python benchmarks/bench_load_gil.py ../shared/models/whisper/hf-whisper-tiny.en
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

CASES = ("alone", "busy", "busy+short")


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

    if case != "alone":
        threading.Thread(target=spin, daemon=True).start()
        time.sleep(0.2)
    clock = PhaseClock()
    with short_switches() if case == "busy+short" else contextlib.nullcontext():
        with clock.phase("imports"):
            import torch  # noqa: F401
            from transformers import WhisperForConditionalGeneration
        with clock.phase("load"):
            WhisperForConditionalGeneration.from_pretrained(checkpoint)
    stop.set()
    print(json.dumps(clock.seconds()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a transformers Whisper checkpoint folder")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.checkpoint)
        return
    print(f"{'case':12s} {'imports s':>10s} {'cpu s':>7s} {'waits':>7s} {'load s':>8s} "
          f"{'cpu s':>7s} {'waits':>7s}")
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, args.checkpoint, "--child", case],
                             capture_output=True, text=True, check=True).stdout
        t = json.loads(out.strip().splitlines()[-1])
        print(f"{case:12s} {t['imports_s']:10.2f} {t['imports_cpu_s']:7.2f} "
              f"{t['imports_blocked']:7.0f} {t['load_s']:8.2f} {t['load_cpu_s']:7.2f} "
              f"{t['load_blocked']:7.0f}")


if __name__ == "__main__":
    main()
