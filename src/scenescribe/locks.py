"""One run per video folder: a lock file holding the owner's host and pid.

A second run on the same folder stops at once with one line naming the owner. A lock whose
owner is gone (same host, pid not running) is stale: it is taken over with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from scenescribe.errors import ScenescribeError

log = logging.getLogger("scenescribe.locks")


class FolderBusyError(ScenescribeError):
    """Another live run holds the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _young(path: Path, seconds: float = 5.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False


def _owner(path: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(path.read_text())
        return str(data["host"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or half-written: treated as stale


def acquire(path: Path) -> None:
    """Create ``path`` exclusively for this process, or raise ``FolderBusyError``."""
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is not None and owner[1] == os.getpid() and owner[0] == socket.gethostname():
                raise FolderBusyError(f"{path.parent}: already in use by this process") from None
            if owner is None and _young(path):  # just created by a run still writing its pid
                raise FolderBusyError(f"{path.parent}: in use by another scenescribe run; "
                                      "wait for it to finish or choose another --out") from None
            if owner is not None and (owner[0] != socket.gethostname() or _alive(owner[1])):
                raise FolderBusyError(
                    f"{path.parent}: in use by another scenescribe run (pid {owner[1]} on "
                    f"{owner[0]}); wait for it to finish or choose another --out") from None
            log.warning("%s: removing a stale lock left by %s", path,
                        f"pid {owner[1]}" if owner else "an unknown run")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return
    raise FolderBusyError(f"{path.parent}: could not take its lock {path.name}")


def release(path: Path) -> None:
    """Remove the lock if this process holds it."""
    owner = _owner(path)
    if owner == (socket.gethostname(), os.getpid()):
        path.unlink(missing_ok=True)
