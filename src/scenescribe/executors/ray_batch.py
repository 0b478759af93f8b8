"""The driver's side of one Ray run: the model actors (a pool) and each batch's calls.

The pool holds ``width`` actors per GPU (``width``: the most model nodes any batch runs side by
side), each with ``1/width`` of its GPU, as a local run shares its one GPU between the models of
a level; on a CPU cluster, ``width`` actors per host. An actor lives for the whole run: each call
brings a node, which loads its model, runs it over the videos of that call (pooled, as a local
run pools a folder) and frees it, so a process imports torch once, not once per stage. A node's
videos are shared between the groups (GPUs or hosts) by length.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import ray

from scenescribe.errors import one_line
from scenescribe.executors import ray_remote
from scenescribe.graph import Failure, Node, Outcomes, RunContext, StageOutput, Task, parts
from scenescribe.progress import Task as ProgressTask
from scenescribe.stages import ShotsStage

log = logging.getLogger("scenescribe.ray")

FAULT_ENV = "SCENESCRIBE_RAY_FAULT"  # test hook (ray_remote.fault_due)


def holds_model(node: Node) -> bool:
    """Whether ``node`` loads a model worth keeping resident (an actor) rather than a task."""
    for stage in parts(node):
        if isinstance(stage, ShotsStage):
            if "torch" in stage.detector.entry.requires:  # TransNetV2 and its ensemble
                return True
        elif hasattr(stage, "backend") or hasattr(stage, "captioner"):
            return True
    return False


def libraries(node: Node) -> set[str]:
    """The modules a model node's backends import (their registry entries' ``requires``)."""
    found: set[str] = set()
    for stage in parts(node):
        for holder in ("backend", "captioner", "detector"):
            entry = getattr(getattr(stage, holder, None), "entry", None)
            found.update(getattr(entry, "requires", ()))
    return found


def shares(tasks: Sequence[dict[str, Task]], count: int) -> list[list[int]]:
    """Task positions split into ``count`` shares of similar media length (longest first onto
    the lightest share); each share keeps the run's order, so one share pools as a local run."""
    loads = [0.0] * count
    chosen: list[list[int]] = [[] for _ in range(count)]
    lengths = [next(iter(t.values())).info.duration for t in tasks]
    for i in sorted(range(len(tasks)), key=lambda i: -lengths[i]):
        lightest = loads.index(min(loads))
        chosen[lightest].append(i)
        loads[lightest] += lengths[i]
    return [sorted(share) for share in chosen if share]


class Pool:
    """The run's model actors, grouped by GPU (or by host without GPUs)."""

    def __init__(self, width: int, gpus: int) -> None:
        self.width, self.gpus = width, gpus
        self.groups: list[list[Any]] = []
        self.spares: list[Any] = []  # single-use actors, for isolating a video
        self._actors: list[Any] = []  # launched, not yet grouped
        self._keys: list[Any] = []
        self._launched = False
        self._busy: dict[int, int] = {}  # id(actor) -> its calls in flight
        self._lock = threading.Lock()  # nodes run side by side share the pool

    def _new(self, label: str, node_id: str | None = None) -> Any:
        options: dict[str, Any] = {"max_restarts": ray_remote.RETRIES,
                                   "max_task_retries": ray_remote.RETRIES}
        if self.gpus:
            options.update(num_gpus=1 / self.width, num_cpus=0)
        else:  # CPU models: no reservation, so the run's CPU tasks are never starved
            options["num_cpus"] = 0
            if node_id is not None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, False)
        return ray_remote.ModelActor.options(**options).remote(label)  # type: ignore[attr-defined]

    def launch(self, warm: Sequence[str] = ()) -> None:
        """Start the actors without waiting: they come up (and, on GPUs, import ``warm``, the
        models' libraries) while the CPU levels run."""
        if self._launched:
            return
        if self.gpus:
            self._actors = [self._new(f"model{i}") for i in range(self.gpus * self.width)]
            self._keys = [a.group.remote() for a in self._actors]
            threads = os.environ.get("OMP_NUM_THREADS")
            for actor in self._actors:
                actor.warm.remote(list(warm), threads)
        else:
            hosts = _cpu_hosts()
            self._actors = [self._new(f"model{i}", hosts[i // self.width])
                            for i in range(len(hosts) * self.width)]
            self._keys = [hosts[i // self.width] for i in range(len(self._actors))]
        self._launched = True

    def start(self) -> None:
        """The actors grouped by GPU or host (waits for them to be placed); a pool whose every
        actor died is launched anew."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self.groups:
            return
        if not self._actors:
            self._launched = False
            self.launch()
        keys = ray.get(self._keys) if self.gpus else self._keys
        grouped: dict[str, list[Any]] = {}
        for key, actor in zip(keys, self._actors, strict=True):
            grouped.setdefault(key, []).append(actor)
        self.groups = [grouped[k] for k in sorted(grouped)]
        self._actors = []

    def take(self, group: list[Any]) -> Any:
        """The least busy actor of ``group`` (a GPU's), counted busy until ``give``."""
        with self._lock:
            actor = min(group, key=lambda a: self._busy.get(id(a), 0))
            self._busy[id(actor)] = self._busy.get(id(actor), 0) + 1
            return actor

    def give(self, actor: Any) -> None:
        with self._lock:
            self._busy[id(actor)] = max(0, self._busy.get(id(actor), 0) - 1)

    def drop(self, actor: Any) -> None:
        """A dead actor leaves its group (and the pool, with its last group)."""
        with self._lock:
            for group in self.groups:
                if actor in group:
                    group.remove(actor)
            self.groups = [group for group in self.groups if group]

    def spare(self) -> Any:
        actor = self._new(f"spare{len(self.spares)}")
        self.spares.append(actor)
        return actor

    def stop(self) -> None:
        with self._lock:
            actors = [a for group in self.groups for a in group] + self.spares + self._actors
            self.groups, self.spares, self._actors = [], [], []
        for actor in actors:
            ray.kill(actor, no_restart=True)


@dataclass
class _Call:
    node: Node
    owners: list[int]  # run positions of the videos in this call
    tasks: list[dict[str, Task]]
    actor: Any = None
    spare: bool = False


class Batch:
    """The Ray calls of one batch of nodes (run side by side): submitted, gathered, stopped."""

    def __init__(self, ctx: RunContext, hub: Any, pool: Pool) -> None:
        self.ctx, self.hub, self.pool = ctx, hub, pool
        self.pending: dict[Any, _Call] = {}
        self.bars: dict[str, ProgressTask] = {}
        self.fault, self.threads = os.environ.get(FAULT_ENV), os.environ.get("OMP_NUM_THREADS")

    def submit(self, node: Node, owners: list[int], tasks: list[dict[str, Task]]) -> None:
        self.bars[node.name] = self.ctx.progress.task(f"{node.name} [ray]", len(tasks))
        if not holds_model(node):
            for i in range(len(tasks)):
                self._send(_Call(node, [owners[i]], [tasks[i]]))
            return
        self.pool.start()
        groups = self.pool.groups
        for group, share in zip(groups, shares(tasks, min(len(groups), len(tasks))),
                                strict=False):
            actor = self.pool.take(group)
            self._send(_Call(node, [owners[i] for i in share], [tasks[i] for i in share], actor))

    def _send(self, call: _Call) -> None:
        if call.actor is None:
            ref = ray_remote.run_task.options(num_cpus=1, max_retries=ray_remote.RETRIES).remote(
                call.node, call.tasks, self.hub, self.fault, self.threads)
        else:
            ref = call.actor.run.remote(call.node, call.tasks, self.hub, self.fault, self.threads)
        self.pending[ref] = call

    def gather(self) -> list[Outcomes]:
        found: list[Outcomes] = []
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
            for ref in ready:
                call = self.pending.pop(ref)
                if call.spare:
                    ray.kill(call.actor, no_restart=True)
                elif call.actor is not None:
                    self.pool.give(call.actor)
                try:
                    outcomes, warnings, where = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died past its retries
                    log.info("%s failed on Ray", call.node.name, exc_info=True)
                    if call.actor is not None and len(call.tasks) > 1:
                        self._isolate(call)  # find the video that kills it: the others go on
                        continue
                    found.append(self._failed(call, exc))
                else:
                    for warning in warnings:
                        self.ctx.warn(warning)
                    found.append({call.owners[i]: {n: _stamped(o, where) for n, o in out.items()}
                                  for i, out in outcomes.items()})
                self.bars[call.node.name].advance(len(call.tasks))
        return found

    def _isolate(self, call: _Call) -> None:
        """Each video of a dead actor's share on an actor of its own (resuming from checkpoints,
        one at a time on a full GPU); the dead actor leaves the pool."""
        self.pool.drop(call.actor)
        for owner, task in zip(call.owners, call.tasks, strict=True):
            self._send(_Call(call.node, [owner], [task], self.pool.spare(), spare=True))

    def _failed(self, call: _Call, exc: Exception) -> Outcomes:
        reason = f"worker failed: {one_line(exc)}"
        if call.node.optional:
            self.ctx.warn(f"{call.node.name}: {reason}")
            return {}
        return {owner: {s.name: Failure(s.name, f"{task[s.name].video.source}: {s.name}: {reason}")
                        for s in parts(call.node)}
                for owner, task in zip(call.owners, call.tasks, strict=True)}

    def stop(self) -> None:
        """Interrupted: kill the workers, then wait until they are gone (a rerun must not race
        a dying writer). Their checkpoints are kept."""
        pending = list(self.pending.items())  # the gathering thread may still pop from it
        for ref, call in pending:
            if call.actor is None:
                ray.cancel(ref, force=True)
        self.pool.stop()
        for _, call in pending:
            if call.spare:
                ray.kill(call.actor, no_restart=True)
        refs = [ref for ref, _ in pending]
        ray.wait(refs, num_returns=len(refs), timeout=10)

    def close_bars(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _cpu_hosts() -> list[str]:
    nodes = cast(Any, ray).nodes()
    found = sorted(n["NodeID"] for n in nodes if n.get("Alive")
                   and n.get("Resources", {}).get("CPU"))
    return found or [cast(Any, ray).get_runtime_context().get_node_id()]


def _stamped(outcome: Any, where: dict[str, Any]) -> Any:
    if isinstance(outcome, StageOutput):
        return dataclasses.replace(outcome, timing={**outcome.timing, "ran_on": where})
    return outcome
