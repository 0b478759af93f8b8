"""Rich progress bars for the CLI, implementing the library's ``Progress`` protocol."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _RichTask:
    def __init__(self, bars: Progress, task_id: Any) -> None:
        self._bars = bars
        self._id = task_id

    def advance(self, amount: float = 1.0) -> None:
        self._bars.advance(self._id, amount)

    def close(self) -> None:
        self._bars.update(self._id, visible=False)
        self._bars.remove_task(self._id)


class RichProgress:
    """One live display on stderr; each stage adds a bar and removes it when done."""

    def __init__(self, console: Console) -> None:
        # Descriptions hold file and model names: shown literally, never read as markup or emoji.
        self._bars = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                              BarColumn(),
                              MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                              console=console, transient=True)

    def task(self, description: str, total: float | None = None) -> _RichTask:
        return _RichTask(self._bars, self._bars.add_task(description, total=total))

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()
