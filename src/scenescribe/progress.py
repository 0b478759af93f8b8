"""Progress reporting that the library emits and a front end (Rich in the CLI) displays."""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    def advance(self, amount: float = 1.0) -> None: ...
    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> Task: ...


class _NullTask:
    def advance(self, amount: float = 1.0) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    """Reports nothing: the library default."""

    def task(self, description: str, total: float | None = None) -> Task:
        return _NullTask()


class PrefixedProgress:
    """Names each task after the item it works on: ``"talk.mp4: shots"``."""

    def __init__(self, inner: Progress, prefix: str) -> None:
        self._inner = inner
        self._prefix = prefix

    def task(self, description: str, total: float | None = None) -> Task:
        return self._inner.task(f"{self._prefix}: {description}", total)
