"""Where the stage graph runs: in this process (``local``, the default) or on Ray (``ray``).

An executor resolves the run's device and runs a planned ``Graph`` over the videos, returning
each video's stage outcomes. Every executor runs the same stage code (``graph.execute``) against
the same work folders and checkpoints, so the records do not depend on where they were computed
and a run started under one executor resumes under the other. ``ray`` is imported only by
``scenescribe.executors.ray``, which only ``open_executor(..., "ray")`` loads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

from scenescribe.graph import Graph, Results, RunContext, Video

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str

    def device(self, requested: str) -> str:
        """``requested`` with ``auto`` resolved where the models will run."""

    def gpus(self) -> int:
        """GPUs this run's models are placed on (0: on CPU)."""

    def run_graph(self, graph: Graph, videos: Sequence[Video], ctx: RunContext,
                  parallel: bool) -> Results:
        """Every stage over every video (``scheduler.run_graph``'s contract)."""


@contextlib.contextmanager
def open_executor(name: str, address: str | None = None) -> Iterator[Executor]:
    """The named executor, started for the block and stopped after it."""
    if name == "ray":
        from scenescribe.executors.ray import RayExecutor

        with RayExecutor(address) as ray_executor:
            yield ray_executor
        return
    from scenescribe.executors.local import LocalExecutor

    yield LocalExecutor()
