"""The Ray executor: the stage graph on a Ray cluster (or a local Ray instance on this host).

The driver (this process) schedules the graph as a local run does (``scheduler.schedule``: a node
starts once what it reads is done); it derives every key and merges every outcome, so the
records and ``run.json`` are the local run's plus ``ran_on`` (node, host, worker, GPUs) in each
stage's timing. CPU nodes become one Ray task per video; model nodes run on the run's pool of
model actors (``ray_batch.Pool``: one per GPU, or ``1/k`` of each GPU when ``k`` model nodes may
run side by side, as a local run shares its GPU; a node takes each GPU's least busy actor), each
given a share of the videos balanced by length and pooling them as ``run`` pools a folder.
A model is loaded once per GPU, never once per video. Workers write their checkpoints into
``--out``, which every node must see. Module map: ``ray_batch`` (pool and calls), ``ray_remote``
(what runs in the workers).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import ray

from scenescribe.errors import ConfigError, OptionError, one_line
from scenescribe.executors import ray_remote
from scenescribe.executors.ray_batch import Batch, Pool, holds_model, libraries
from scenescribe.graph import Graph, Node, Outcomes, Results, RunContext, Video
from scenescribe.progress import Progress
from scenescribe.progress import Task as ProgressTask
from scenescribe.scheduler import Prepared, schedule

log = logging.getLogger("scenescribe.ray")

# Forwarded to the workers of a cluster joined by address (a local instance inherits them).
FORWARDED_ENV = ("SCENESCRIBE_", "HF_", "TRANSFORMERS_", "YOLO_")  # never CUDA_*: Ray sets it


@dataclass
class _Relay:
    """Replays the workers' progress events on the driver's progress view."""

    hub: Any
    progress: Progress
    open: dict[str, ProgressTask] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # the loop and ``settle``

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="ray-progress", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.3):
            try:
                self.pump()
            except Exception:  # progress is best effort; the work goes on
                log.debug("progress relay failed", exc_info=True)

    def pump(self) -> None:
        with self.lock:
            self._apply(ray.get(self.hub.drain.remote()))

    def _apply(self, events: list[tuple[Any, ...]]) -> None:
        for event in events:
            kind, task_id = event[0], event[1]
            if kind == "open":
                self.open[task_id] = self.progress.task(event[2], event[3])
            elif kind == "advance" and task_id in self.open:
                self.open[task_id].advance(event[2])
            elif kind == "close" and task_id in self.open:
                self.open.pop(task_id).close()

    def settle(self) -> None:
        """Show what arrived and close the bars of workers that died before closing them."""
        self.pump()
        with self.lock:
            for task in self.open.values():
                task.close()
            self.open.clear()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


REACH_TIMEOUT_S = 5.0
CLIENT_PORT = 10001  # Ray client's default port (``ray://host``)


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail in seconds, in one line, when nothing listens at a ``host:port`` cluster address.

    Ray itself retries an unreachable address for minutes before it gives up. ``auto`` (the
    address Ray recorded on this host) is left to Ray.
    """
    target = address.strip()
    if target in ("", "auto", "local"):
        return
    client = target.startswith("ray://")
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        host, port = target.removeprefix("ray://"), str(CLIENT_PORT if client else 6379)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"executor ray: nothing answers at {address} ({exc.strerror or exc}) "
                          f"within {timeout:g} s; is the cluster's head node up?") from exc


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.started = False
        self.resolved = "cpu"  # the run's device, once ``device`` resolved it

    def __enter__(self) -> RayExecutor:
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "logging_level": logging.WARNING}
            if self.address:
                check_reachable(self.address)
                env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
                options.update(address=self.address, runtime_env={"env_vars": env})
            try:
                ray.init(**options)  # no address: a local instance with every CPU and GPU here
            except Exception as exc:  # one line, not Ray's traceback
                where = f"join the Ray cluster at {self.address}" if self.address else (
                    "start a local Ray instance")
                raise ConfigError(f"executor ray: cannot {where}: {one_line(exc)}") from exc
            self.started = True
        _send_locks_fresh()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            ray.shutdown()

    def gpus(self) -> int:
        """The cluster's GPUs when the run's models go on GPUs, else 0."""
        return self.cluster_gpus() if self.resolved.startswith("cuda") else 0

    def cluster_gpus(self) -> int:
        return int(cast(Any, ray).cluster_resources().get("GPU", 0))

    def device(self, requested: str) -> str:
        gpus = self.cluster_gpus()
        if requested.startswith("cuda") and not gpus:
            raise OptionError(f"device (--device): expected a GPU in the Ray cluster, found "
                              f"{requested!r} but the cluster has none")
        if requested == "auto" or requested.startswith("cuda"):
            # Ray gives each actor its GPU share and shows it as device 0.
            self.resolved = "cuda" if gpus else "cpu"
        else:
            self.resolved = requested
        return self.resolved

    def run_graph(self, graph: Graph, videos: Sequence[Video], ctx: RunContext,
                  parallel: bool) -> Results:
        hub = ray_remote.ProgressHub.remote()  # type: ignore[attr-defined]
        relay = _Relay(hub, ctx.progress)
        relay.start()
        pool = Pool(model_width(graph.nodes, parallel), self.gpus())
        models = [node for node in graph.nodes if holds_model(node)]
        if models and pool.gpus:  # up and importing while probe and shots run
            pool.launch(sorted(set().union(*(libraries(node) for node in models))))
        active: set[Batch] = set()
        lock = threading.Lock()

        def run_node(node: Node, prepared: Prepared) -> Outcomes:
            work = Batch(ctx, relay.hub, pool)
            with lock:
                active.add(work)
            try:
                if prepared.tasks:
                    work.submit(node, prepared.owners, prepared.tasks)
                found = work.gather()
            finally:
                work.close_bars()
                with lock:
                    active.discard(work)
            relay.settle()
            outcomes: Outcomes = {v: dict(o) for v, o in prepared.early.items()}
            for part in found:
                for v, out in part.items():
                    outcomes.setdefault(v, {}).update(out)
            return outcomes

        def stop() -> None:  # interrupted: the workers go; their checkpoints are kept
            with lock:
                batches = list(active)
            for work in batches:
                work.stop()

        try:
            return schedule(graph, videos, parallel, run_node, stop, ctx.spans)
        finally:
            pool.stop()
            relay.close()
            ray.kill(hub)


def model_width(nodes: Sequence[Node], parallel: bool) -> int:
    """Model nodes that may run at once (``scheduler.schedule``): every concurrent one, plus one
    other; the actors per GPU, each given that share of it."""
    if not parallel:
        return 1
    concurrent = sum(1 for node in nodes if holds_model(node) and node.concurrent)
    others = any(holds_model(node) and not node.concurrent for node in nodes)
    return max(1, concurrent + int(others))


def _new_lock(_: None) -> Any:
    return threading.Lock()


def _new_rlock(_: None) -> Any:
    return threading.RLock()


def _send_locks_fresh() -> None:
    """Stages and backends may hold a thread lock (a captioner's tokenizer lock); a lock guards
    one process's state, so the worker gets a new, unlocked one."""
    util = cast(Any, ray).util
    util.register_serializer(type(threading.Lock()), serializer=lambda _: None,
                             deserializer=_new_lock)
    util.register_serializer(type(threading.RLock()), serializer=lambda _: None,
                             deserializer=_new_rlock)
