"""A short interpreter switch interval while models load, so a load is not starved of the GIL.

An import or a ``from_pretrained`` gives the interpreter lock up at every file read and every
small call into C; a busy Python thread beside it (a decode loop, a detector's batching) then
takes the lock and keeps it for the whole switch interval (5 ms) before the load gets it back.
On this project's 2-core CPU machine (``benchmarks/bench_load_gil.py``), importing torch and
transformers' Whisper took 3.6 s alone and 136.9 s beside one busy thread (39,490 waits for the
lock), 17.1 s with a 0.5 ms interval; ``from_pretrained`` of tiny.en 0.11, 2.31 and 0.47 s. On a
slow H200 host Whisper's imports took 24-28 s inside Stage 1
(``benchmarks/results/h200-2026-12-04-x/b``). So while any load runs, the process's
interval is ``SCENESCRIBE_LOAD_SWITCH_US`` (default 500 us; 0 leaves it alone), and put back
when the last one ends (an interval another caller sets meanwhile is overwritten then).
Threads that only compute lose little: a hand-off costs microseconds.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from scenescribe.knobs import env_count

LOAD_SWITCH_US = 500  # default of ``SCENESCRIBE_LOAD_SWITCH_US``

_lock = threading.Lock()
_holders = 0
_saved = 0.0


@contextlib.contextmanager
def short_switches() -> Iterator[None]:
    """The process's switch interval at most ``SCENESCRIBE_LOAD_SWITCH_US`` while any holder
    is inside; the interval from before the first holder is put back when the last one leaves
    (holders may overlap from several threads)."""
    global _holders, _saved
    micros = env_count("SCENESCRIBE_LOAD_SWITCH_US")
    micros = LOAD_SWITCH_US if micros is None else micros
    if micros <= 0:
        yield
        return
    with _lock:
        if _holders == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved, micros / 1e6))
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                sys.setswitchinterval(_saved)
