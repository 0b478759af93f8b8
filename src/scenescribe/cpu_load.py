"""How busy the machine's CPUs were while a job ran, for ``scenescribe bench``.

Whether a stage that waits is waiting for cores or for something else decides what to change:
a tracker that starts earlier helps only if the cores have room then. ``CpuSampler`` reads the
kernel's summed CPU times (``/proc/stat``) every ``interval`` seconds on a thread of its own and
gives the busy share of all cores per interval; the job's own CPU seconds (its process and the
child processes it waited for) come from ``os.times``. Where ``/proc/stat`` is missing (macOS,
Windows) the timeline is empty.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")


def read_cpu_times(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """``(busy, total)`` clock ticks of all CPUs since boot, or None where unreadable. Idle and
    waiting for I/O count as not busy; guest time is already inside user time."""
    try:
        first = path.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu" or len(first) < 5:
        return None
    try:
        ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    except ValueError:
        return None
    total = sum(ticks)
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return total - idle, total


class CpuSampler:
    """Samples the CPUs' busy share every ``interval`` seconds while entered."""

    def __init__(self, interval: float = 1.0, path: Path = PROC_STAT) -> None:
        self.interval = interval
        self.path = path
        self.samples: list[tuple[float, float]] = []  # (seconds since entry at the end, share)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0
        self._usage: tuple[float, float] = (0.0, 0.0)
        self.cpu_s = self.children_cpu_s = self.wall_s = 0.0  # set on exit

    def __enter__(self) -> CpuSampler:
        self._start = time.perf_counter()
        self._usage = _cpu_seconds()
        if read_cpu_times(self.path) is not None:
            self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        own, children = _cpu_seconds()
        self.cpu_s = own - self._usage[0]
        self.children_cpu_s = children - self._usage[1]
        self.wall_s = time.perf_counter() - self._start

    def _run(self) -> None:
        last = read_cpu_times(self.path)
        while not self._stop.wait(self.interval):
            now = read_cpu_times(self.path)
            if now is None or last is None:  # unreadable this once: the next read spans more
                last = last or now
                continue
            busy, total = now[0] - last[0], now[1] - last[1]
            if total > 0:
                self.samples.append((time.perf_counter() - self._start, busy / total))
            last = now

    def report(self) -> dict[str, Any]:
        """For bench.json: the busy share per interval, the job's CPU seconds and what they
        are of every core's wall clock."""
        cores = os.cpu_count() or 1
        used = self.cpu_s + self.children_cpu_s
        return {"interval_s": self.interval, "cores": cores,
                "busy": [round(share, 3) for _, share in self.samples],
                "job_cpu_s": round(self.cpu_s, 2), "children_cpu_s": round(self.children_cpu_s, 2),
                "job_share": round(used / (max(self.wall_s, 1e-9) * cores), 3)}


def _cpu_seconds() -> tuple[float, float]:
    """User plus system seconds of this process and of its children that were waited for
    (those are 0 on Windows)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system
