"""What runs inside Ray's worker processes: the stage calls, and progress sent to the driver.

A CPU node (probe, cheap shot detectors, frames) runs as one Ray task per video; a node holding
a model (speech, sounds, objects, a GPU shot detector, each captioner) runs in a ``ModelActor``
of the run's pool, which loads the model once and runs it over every video given to it, pooled
as a local run pools them. Both call ``graph.execute``: the same stage code, writing the same checkpoints into
the shared ``--out`` folder, from the node that computed them. A worker that dies is retried by
Ray (tasks: ``max_retries``; actors: ``max_restarts`` and ``max_task_retries``); the retry
resumes from the checkpoints the dead worker flushed.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import ray

from scenescribe.graph import Node, Outcomes, RunContext, Task, execute, parts

RETRIES = 3  # a killed worker is retried this often before its videos fail (read by the driver)
FLUSH_S = 0.25  # progress events are sent to the driver at most this often per worker

Event = tuple[Any, ...]
Result = tuple[Outcomes, list[str], dict[str, Any]]  # outcomes, warnings, where it ran


@ray.remote(num_cpus=0)
class ProgressHub:
    """Collects the workers' progress events until the driver drains them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def post(self, events: list[Event]) -> None:
        self.events.extend(events)

    def drain(self) -> list[Event]:
        events, self.events = self.events, []
        return events


class _RemoteTask:
    def __init__(self, progress: RemoteProgress, task_id: str) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, amount: float = 1.0) -> None:
        self._progress.add(("advance", self._id, amount))

    def close(self) -> None:
        self._progress.add(("close", self._id), flush=True)


class RemoteProgress:
    """The library's ``Progress`` inside a worker: events batched to the driver's hub, where
    the one progress view shows them."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub
        self._pending: list[Event] = []
        self._lock = threading.Lock()
        self._last = 0.0
        self._count = 0
        self._prefix = f"{socket.gethostname()}-{os.getpid()}-{id(self)}"

    def task(self, description: str, total: float | None = None) -> _RemoteTask:
        with self._lock:
            self._count += 1
            task_id = f"{self._prefix}-{self._count}"
        self.add(("open", task_id, description, total), flush=True)
        return _RemoteTask(self, task_id)

    def add(self, event: Event, flush: bool = False) -> None:
        with self._lock:
            last = self._pending[-1] if self._pending else None
            if event[0] == "advance" and last and last[0] == "advance" and last[1] == event[1]:
                self._pending[-1] = ("advance", event[1], last[2] + event[2])  # one per flush
            else:
                self._pending.append(event)
            if flush or time.monotonic() - self._last > FLUSH_S:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        events, self._pending = self._pending, []
        self._last = time.monotonic()
        if events:
            self._hub.post.remote(events)  # calls from one worker arrive in order


def placement(worker: str) -> dict[str, Any]:
    """Where this call ran, for ``run.json`` (``timings.<stage>.ran_on``)."""
    context = ray.get_runtime_context()
    return {"executor": "ray", "worker": worker, "host": socket.gethostname(),
            "ip": cast(Any, ray).util.get_node_ip_address(), "node": context.get_node_id(),
            "pid": os.getpid(), "gpus": [str(g) for g in ray.get_gpu_ids()]}


def fault_due(fault: str | None, node: Node, tasks: Sequence[Mapping[str, Task]]) -> str | None:
    """Fault injection for tests, comma-separated: ``STAGE=MARKER`` kills the first worker that
    runs STAGE once (the marker file remembers it), after its first video's work is
    checkpointed ("after-first"); ``STAGE@FILE`` kills every worker given the video FILE (a
    file name) for STAGE before it starts ("now")."""
    names = {p.name for p in parts(node)}
    videos = {next(iter(t.values())).video.source.name for t in tasks}
    for item in (fault or "").split(","):
        if "@" in item and "=" not in item:
            stage, _, video = item.partition("@")
            if stage in names and video in videos:
                return "now"
            continue
        stage, _, marker = item.partition("=")
        if stage in names and marker:
            try:
                Path(marker).open("x").close()
            except FileExistsError:
                continue
            return "after-first"
    return None


def same_threads(threads: str | None) -> None:
    """The driver's ``OMP_NUM_THREADS`` (usually unset), not the 1 Ray gives a 1-CPU worker: the
    backends choose their threads as in a local run (before they import torch or CTranslate2)."""
    if threads is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = threads


def work(node: Node, tasks: Sequence[Mapping[str, Task]], hub: Any, worker: str,
         fault: str | None, threads: str | None) -> Result:
    """``graph.execute`` here, with progress sent to the driver."""
    same_threads(threads)
    progress = RemoteProgress(hub)
    ctx = RunContext(progress)
    due = fault_due(fault, node, tasks)
    if due is not None:
        if due == "after-first":
            execute(node, tasks[:1], ctx)
            progress.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # as a node or OOM killer would
    outcomes = execute(node, tasks, ctx)
    progress.flush()
    return outcomes, ctx.warnings, placement(worker)


@ray.remote(max_retries=RETRIES)
def run_task(node: Node, tasks: Sequence[Mapping[str, Task]], hub: Any,
             fault: str | None, threads: str | None) -> Result:
    """One CPU node over one video."""
    return work(node, tasks, hub, "task", fault, threads)


@ray.remote
class ModelActor:
    """A worker for models: each call loads its node's model once, runs it over every video of
    the call and frees it; the process (its imports, its CUDA context) serves the whole run.
    Restarted by Ray when it dies (the driver sets ``max_restarts``)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def warm(self, modules: list[str], threads: str | None) -> None:
        """Import the models' libraries ahead of the first call (errors wait for the call),
        under the driver's thread settings (torch reads them on import)."""
        import importlib

        same_threads(threads)
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # the call that needs it reports it properly
                continue

    def group(self) -> str:
        """The GPU(s) Ray gave this actor: the driver shares each node's videos by GPU."""
        return ",".join(str(g) for g in ray.get_gpu_ids())

    def run(self, node: Node, tasks: Sequence[Mapping[str, Task]], hub: Any, fault: str | None,
            threads: str | None) -> Result:
        return work(node, tasks, hub, f"actor {self.label}", fault, threads)
