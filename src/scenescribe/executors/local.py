"""The default executor: every stage in this process, stage-major, as ``scheduler.run_graph``."""

from __future__ import annotations

from collections.abc import Sequence

from scenescribe.backend import resolve_device
from scenescribe.graph import Graph, Results, RunContext, Video
from scenescribe.scheduler import run_graph


class LocalExecutor:
    name = "local"

    def __init__(self) -> None:
        self.resolved = "cpu"

    def device(self, requested: str) -> str:
        self.resolved = resolve_device(requested)
        return self.resolved

    def gpus(self) -> int:
        """A local run places its models on one GPU at most."""
        return 1 if self.resolved.startswith("cuda") else 0

    def run_graph(self, graph: Graph, videos: Sequence[Video], ctx: RunContext,
                  parallel: bool) -> Results:
        return run_graph(graph, videos, ctx, parallel)
