"""Worker processes: ``python -m <module>`` children that read one JSON job on stdin.

A plain subprocess rather than multiprocessing: spawn re-imports the caller's ``__main__``,
which breaks user scripts without an ``if __name__ == "__main__"`` guard, and fork is unsafe
in a process that holds threads or CUDA state. The child's stderr goes to a temporary file (a
full stderr pipe would block it); its last line explains a failure. Used by the shot-detection
segments and the speech stage's audio readers.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any


class Worker:
    """A started worker process and the file its stderr goes to."""

    def __init__(self, process: subprocess.Popen[str], errors: IO[str]) -> None:
        self.process = process
        self.errors = errors

    def failure(self) -> str:
        """Why it failed: the last line it wrote to stderr, else its exit status."""
        self.errors.seek(0)
        lines = self.errors.read().strip().splitlines()
        return lines[-1] if lines else f"exit status {self.process.poll()}"


@contextlib.contextmanager
def worker_process(module: str, job: Mapping[str, Any],
                   stdout: int | IO[Any] | None = subprocess.PIPE) -> Iterator[Worker]:
    """Run ``python -m module`` with ``job`` on its stdin; on leaving, a child still running is
    killed and every child is waited for, so none outlives the block (nor turns zombie)."""
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE,
                                   stdout=stdout, stderr=errors, text=True)
        try:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # died at once: its stderr says why
                process.stdin.write(json.dumps(job))
                process.stdin.close()
            yield Worker(process, errors)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
