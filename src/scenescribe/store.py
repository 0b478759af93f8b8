"""Crash-safe files: atomic writes, resumable JSONL checkpoints and content fingerprints.

A finished file appears only by rename, so a reader never sees half of one. Work in progress
goes to ``<name>.partial``, one flushed JSON line per unit; a rerun keeps its complete lines,
drops a torn last line and carries on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("scenescribe.store")

# Files up to this size are hashed whole; larger ones by size plus evenly spread samples.
FULL_HASH_LIMIT = 64 << 20
SAMPLE_COUNT = 16
SAMPLE_BYTES = 1 << 20


def stable_hash(obj: Any, length: int = 16) -> str:
    """Short hex digest of a JSON-serialisable object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def fingerprint_file(path: str | Path) -> str:
    """Fingerprint of a file's content: whole-file BLAKE2b below 64 MiB, sampled above.

    Sampling reads 16 MiB of a multi-GB video instead of all of it; size is part of the digest,
    so truncation or growth always changes it. Memoised per (path, size, mtime).
    """
    p = Path(path)
    st = p.stat()
    memo_key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key in _FINGERPRINTS:
        return _FINGERPRINTS[memo_key]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(st.st_size).encode())
    with p.open("rb") as f:
        if st.st_size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        else:
            stride = (st.st_size - SAMPLE_BYTES) // (SAMPLE_COUNT - 1)
            for i in range(SAMPLE_COUNT):
                f.seek(i * stride)
                digest.update(f.read(SAMPLE_BYTES))
    _FINGERPRINTS[memo_key] = digest.hexdigest()
    return _FINGERPRINTS[memo_key]


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", durable: bool = True) -> Iterator[IO[Any]]:
    """Write to a temporary name beside ``path`` and rename over it only on success.

    ``durable``: flushed to the disk before the rename (``fsync``). Leave it on unless the
    reader checks the file itself: a crash can then leave the name with no or partial data.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tmp.open(mode) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    with atomic_open(path, "wb", durable) as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the objects of a JSONL file, one per line (blank lines skipped)."""
    with Path(path).open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _complete_lines(path: Path) -> list[dict[str, Any]]:
    """The parseable, newline-terminated lines of a partial file; truncates a torn tail."""
    good: list[dict[str, Any]] = []
    keep = 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                good.append(json.loads(raw))
            except json.JSONDecodeError:
                break
            keep += len(raw)
    if keep != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(keep)
    return good


class JsonlCheckpoint:
    """Resumable per-unit results: ``<final>.partial`` while running, ``<final>`` once complete.

    Each unit is one JSON object holding ``key_field``; ``done`` maps keys to finished units.
    """

    def __init__(self, final: str | Path, key_field: str = "index") -> None:
        self.final = Path(final)
        self.partial = self.final.with_name(self.final.name + ".partial")
        self.key_field = key_field
        self._file: IO[str] | None = None
        self.done: dict[Any, dict[str, Any]] = {}
        self.damaged = False  # a finished file that could not be read: recomputed
        if self.final.exists():
            try:
                self.done = {r[key_field]: r for r in read_jsonl(self.final)}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Our own cache file, damaged on disk: recompute rather than fail every rerun.
                log.warning("%s is damaged (%s); recomputing it", self.final, _reason(exc))
                self.final.unlink(missing_ok=True)
                self.damaged = True
        if not self.final.exists() and self.partial.exists():
            self.done = {r[key_field]: r for r in _complete_lines(self.partial)
                         if isinstance(r, dict) and key_field in r}

    @property
    def complete(self) -> bool:
        return self.final.exists()

    def append(self, record: Mapping[str, Any]) -> None:
        if self.complete:
            raise RuntimeError(f"{self.final} is complete; start a new checkpoint to add to it")
        if self._file is None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.partial.open("a")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()  # survives SIGKILL: the OS holds flushed bytes
        self.done[record[self.key_field]] = dict(record)

    def finish(self) -> None:
        """Mark complete: units written in key order, then renamed into place."""
        self.close()
        with atomic_open(self.final) as f:
            for key in sorted(self.done):
                f.write(json.dumps(self.done[key], separators=(",", ":")) + "\n")
        self.partial.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JsonlCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_json(path: Path) -> Any | None:
    """A finished JSON file of ours, or ``None`` (with a warning naming it) when damaged."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s is damaged (%s); recomputing it", path, _reason(exc))
        path.unlink(missing_ok=True)
        return None


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
