"""The default executor: every stage in this process, stage-major, as ``graph.run_graph``."""

from __future__ import annotations

from collections.abc import Sequence

from scenescribe.backend import resolve_device
from scenescribe.graph import Graph, Results, RunContext, Video, run_graph


class LocalExecutor:
    name = "local"

    def device(self, requested: str) -> str:
        return resolve_device(requested)

    def gpus(self) -> int:
        if not self.device("auto").startswith("cuda"):
            return 0
        import torch

        return int(torch.cuda.device_count())

    def run_graph(self, graph: Graph, videos: Sequence[Video], ctx: RunContext,
                  parallel: bool) -> Results:
        return run_graph(graph, videos, ctx, parallel)
