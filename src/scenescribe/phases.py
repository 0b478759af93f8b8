"""Where a thread's work spends its time: seconds per phase, and how the thread fared.

Used for a speech model's batches and for each model load's imports. Inside Stage 1 Whisper's
phases took several times their work alone, and by amounts that varied from run to run
(``benchmarks/results/h200-2026-12-03-m``): the encoder pass 1.0-9.8 s, the alignment's few
hundred calls 4-12 s against 26 ms of GPU work; and its load's imports took 24-28 s on a slow
host (``-04-x/b``). Besides the seconds, each
phase therefore records the calling thread's CPU seconds and its context switches (Linux):
``<phase>_blocked`` counts the times it gave the CPU up to wait (for the interpreter lock, a
stream, a child), ``<phase>_preempted`` the times the kernel took the CPU from it for other
threads (a CPU oversubscribed by decoders). A phase whose seconds far exceed its CPU seconds
waited; the two counts say for what kind of thing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

try:
    import resource

    _THREAD = getattr(resource, "RUSAGE_THREAD", None)
except ImportError:  # not on POSIX
    resource = None  # type: ignore[assignment]
    _THREAD = None


def _usage() -> tuple[float, int, int]:
    """This thread's CPU seconds, voluntary and involuntary context switches so far."""
    if resource is not None and _THREAD is not None:
        used = resource.getrusage(_THREAD)
        return used.ru_utime + used.ru_stime, used.ru_nvcsw, used.ru_nivcsw
    return time.thread_time(), 0, 0


class PhaseClock:
    """Sums per phase name: ``<name>_s`` (wall), ``<name>_cpu_s``, ``<name>_blocked``,
    ``<name>_preempted`` over every entry of ``phase``."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}

    def seconds(self) -> dict[str, float]:
        return dict(self._sums)

    @contextlib.contextmanager
    def phase(self, name: str, wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Times the body; ``wait`` (a device's stream synchronisation) runs at its end, so
        work queued by the phase is charged to it."""
        start, (cpu, blocked, preempted) = time.perf_counter(), _usage()
        yield
        if wait is not None:
            wait()
        end, (cpu_end, blocked_end, preempted_end) = time.perf_counter(), _usage()
        for key, value in ((f"{name}_s", end - start), (f"{name}_cpu_s", cpu_end - cpu),
                           (f"{name}_blocked", blocked_end - blocked),
                           (f"{name}_preempted", preempted_end - preempted)):
            self._sums[key] = self._sums.get(key, 0.0) + value
