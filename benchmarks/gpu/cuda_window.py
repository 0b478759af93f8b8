"""A CUDA trace of one Whisper batch inside a whole job: what its phases wait for.

Loaded by a ``sitecustomize`` on the job's path (``job_variants.sh ... stage1trace``), in the
``scenescribe bench`` process only. ``arm()`` wraps ``PhaseClock.phase``: the first ``encode``
phase starts torch's profiler (CPU and CUDA activity: every stream's kernels and every thread's
CUDA runtime calls, from CUPTI), the first ``dtw`` phase's end stops it and writes
``$TRACE_OUT/trace.json`` beside ``phases.json`` (each phase's thread and epoch start and end)
and ``threads.json`` (native thread id -> name). ``trace_summary.py`` reads the three.

Benchmark tooling only: nothing in scenescribe imports it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_STATE: dict[str, Any] = {"profiler": None, "done": False, "phases": []}
_LOCK = threading.Lock()


def _start() -> None:
    from torch.profiler import ProfilerActivity, profile

    profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    profiler.start()
    _STATE["profiler"] = profiler
    _STATE["started"] = time.time()
    print(f"cuda_window: tracing from {time.strftime('%X')}", file=sys.stderr, flush=True)


def _stop(out: Path) -> None:
    profiler = _STATE["profiler"]
    profiler.stop()
    _STATE["done"] = True
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    profiler.export_chrome_trace(str(out / "trace.json"))
    (out / "phases.json").write_text(json.dumps(_STATE["phases"]))
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    (out / "threads.json").write_text(json.dumps(names))
    print(f"cuda_window: trace written in {time.perf_counter() - begin:.1f} s "
          f"({(out / 'trace.json').stat().st_size / 1e6:.0f} MB)", file=sys.stderr, flush=True)


def arm() -> None:
    """Wrap ``PhaseClock.phase`` once scenescribe's speech phases can be imported."""
    if "bench" not in sys.argv or not any("scenescribe" in a for a in sys.argv):
        return
    out = Path(os.environ.get("TRACE_OUT", "trace-out"))
    import contextlib

    from scenescribe import phases

    plain = phases.PhaseClock.phase

    @contextlib.contextmanager
    def phase(self: Any, name: str, wait: Any = None) -> Iterator[None]:
        with _LOCK:
            if name == "encode" and _STATE["profiler"] is None:
                _start()
        start = time.time()
        with plain(self, name, wait):
            yield
        end = time.time()
        with _LOCK:
            if _STATE["profiler"] is not None and not _STATE["done"]:
                _STATE["phases"].append({"name": name, "tid": threading.get_native_id(),
                                         "start": start, "end": end})
                if name == "dtw":
                    _stop(out)

    phases.PhaseClock.phase = phase  # type: ignore[method-assign]
