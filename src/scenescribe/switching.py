"""A shorter interpreter switch interval while a loop of small calls runs beside busy threads.

Every torch and numpy call of any size releases the interpreter lock and takes it back after.
When another thread of the process is running Python meanwhile, taking it back waits until that
thread is asked to drop it: after the switch interval, 5 ms by default. A loop of many small
calls then waits about that long per call. Stage 1's process has such threads (the tracker's
ByteTrack, the frame writers, the stages' own threads). ``benchmarks/bench_dtw.py`` measured
this on a CPU: a loop of about 2,000 numpy calls took 0.43 s alone, 12.2 s beside one busy
thread, and 1.96 s beside it with a 0.5 ms interval. On the H200, Whisper's encoder phase
(about 700 calls) took 4.7 s inside Stage 1 at 5 ms and 1.0 s with the whole run at 0.5 ms,
but that did not repeat (below).

``short_switches`` sets the interval to ``SCENESCRIBE_SWITCH_US`` microseconds while at least
one thread is inside it, and puts the previous value back when the last one leaves. It only
ever shortens the interval. Off by default (0 leaves the interpreter's own): around Whisper's
batches inside Stage 1 on the H200 (W1, one host, back to back, 2026-12-03m) speech took 19.5 s
at 500 us against 18.4 s at 5 ms, and a whole run at 0.5 ms took 17.9 s against 18.4 s on
another host: no gain beyond the run-to-run spread, whose encoder phase alone varied from 1.0
to 9.8 s.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from scenescribe.knobs import env_count

DEFAULT_MICROSECONDS = 0  # measured: no gain (above)

_lock = threading.Lock()
_holders = 0
_saved: float | None = None  # the interval before the first holder entered


def _wanted() -> float | None:
    """The interval to use, in seconds, or None to leave the interpreter's own."""
    microseconds = env_count("SCENESCRIBE_SWITCH_US")
    if microseconds is None:
        microseconds = DEFAULT_MICROSECONDS
    return microseconds / 1e6 if microseconds > 0 else None


@contextlib.contextmanager
def short_switches() -> Iterator[None]:
    """The interval shortened (``SCENESCRIBE_SWITCH_US``) for the duration; nestable and
    shared between threads."""
    global _holders, _saved
    wanted = _wanted()
    if wanted is None:
        yield
        return
    with _lock:
        if _holders == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(min(wanted, _saved))
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _saved is not None:
                sys.setswitchinterval(_saved)
                _saved = None
