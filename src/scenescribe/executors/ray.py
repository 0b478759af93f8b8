"""The Ray executor: the stage graph on a Ray cluster (or a local Ray instance on this host).

The driver (this process) plans as a local run does, level by level (``graph.batches``); it
derives every key and merges every outcome, so the records and ``run.json`` are the local run's
plus ``ran_on`` (node, host, worker, GPUs) in each stage's timing. CPU nodes become one Ray task
per video; each model node becomes actors, one per GPU (``1/k`` of a GPU when ``k`` model nodes
run side by side, as a local run shares its GPU), each given a share of the videos balanced by
duration and pooling them as ``run`` pools a folder. A model is loaded once per actor, never once
per video. Workers write their checkpoints into ``--out``, which every node must see.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import ray

from scenescribe.errors import OptionError
from scenescribe.executors import ray_remote
from scenescribe.graph import (
    Failure,
    Graph,
    Node,
    Outcomes,
    Results,
    RunContext,
    StageOutput,
    Task,
    Video,
    batches,
    merge,
    parts,
    prepare,
)
from scenescribe.progress import Progress
from scenescribe.progress import Task as ProgressTask
from scenescribe.stages import ShotsStage

log = logging.getLogger("scenescribe.ray")

FAULT_ENV = "SCENESCRIBE_RAY_FAULT"  # test hook: "STAGE=MARKER" kills STAGE's first worker once
# Forwarded to the workers of a cluster joined by address (a local instance inherits them).
FORWARDED_ENV = ("SCENESCRIBE_", "HF_", "TRANSFORMERS_", "YOLO_", "CUDA_", "PYTHONPATH")


def holds_model(node: Node) -> bool:
    """Whether ``node`` loads a model worth keeping resident (an actor) rather than a task."""
    for stage in parts(node):
        if isinstance(stage, ShotsStage):
            if "torch" in stage.detector.entry.requires:  # TransNetV2 and its ensemble
                return True
        elif hasattr(stage, "backend") or hasattr(stage, "captioner"):
            return True
    return False


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


@dataclass
class _Call:
    node: Node
    owners: list[int]  # run positions of the videos in this call
    tasks: list[dict[str, Task]]
    actor: Any = None


@dataclass
class _Relay:
    """Replays the workers' progress events on the driver's progress view."""

    hub: Any
    progress: Progress
    open: dict[str, ProgressTask] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

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
        for event in ray.get(self.hub.drain.remote()):
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
        for task in self.open.values():
            task.close()
        self.open.clear()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.started = False

    def __enter__(self) -> RayExecutor:
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "logging_level": logging.WARNING}
            if self.address:
                env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
                options.update(address=self.address, runtime_env={"env_vars": env})
            ray.init(**options)  # no address: a local instance with every CPU and GPU here
            self.started = True
        _send_locks_fresh()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            ray.shutdown()

    def gpus(self) -> int:
        return int(cast(Any, ray).cluster_resources().get("GPU", 0))

    def device(self, requested: str) -> str:
        gpus = self.gpus()
        if requested == "auto":
            return "cuda" if gpus else "cpu"
        if requested.startswith("cuda"):
            if not gpus:
                raise OptionError(f"device (--device): expected a GPU in the Ray cluster, found "
                                  f"{requested!r} but the cluster has none")
            return "cuda"  # Ray gives each actor its GPU(s) as device 0
        return requested

    def run_graph(self, graph: Graph, videos: Sequence[Video], ctx: RunContext,
                  parallel: bool) -> Results:
        results: Results = [{} for _ in videos]
        hub = ray_remote.ProgressHub.remote()  # type: ignore[attr-defined]
        relay = _Relay(hub, ctx.progress)
        relay.start()
        device = "cuda" if self.gpus() else "cpu"
        try:
            for level in graph.levels():
                for batch in batches(level, parallel):
                    self._run_batch(batch, videos, results, ctx, relay, device)
        finally:
            relay.close()
            ray.kill(hub)
        return results

    def _run_batch(self, batch: Sequence[Node], videos: Sequence[Video], results: Results,
                   ctx: RunContext, relay: _Relay, device: str) -> None:
        """One batch of nodes (run side by side), all its work in flight at once."""
        work = _Batch(ctx, relay.hub, self.gpus() if device == "cuda" else 0,
                      sum(1 for node in batch if holds_model(node)))
        found: list[Outcomes] = []
        try:
            for node in batch:
                prepared = prepare(node, videos, results)
                found.append(prepared.early)
                if prepared.tasks:
                    work.submit(node, prepared.owners, prepared.tasks)
            found.extend(work.gather())
        except BaseException:  # interrupted: stop the workers; their checkpoints are kept
            work.stop()
            raise
        finally:
            work.close_bars()
        relay.settle()
        for outcomes in found:
            merge(outcomes, results)


class _Batch:
    """The Ray calls of one batch of nodes: submitted, gathered, or stopped."""

    def __init__(self, ctx: RunContext, hub: Any, gpus: int, models: int) -> None:
        self.ctx, self.hub, self.gpus, self.models = ctx, hub, gpus, models
        self.pending: dict[Any, _Call] = {}
        self.bars: dict[str, ProgressTask] = {}
        self.fault, self.threads = os.environ.get(FAULT_ENV), os.environ.get("OMP_NUM_THREADS")

    def submit(self, node: Node, owners: list[int], tasks: list[dict[str, Task]]) -> None:
        self.bars[node.name] = self.ctx.progress.task(f"{node.name} [ray]", len(tasks))
        if not holds_model(node):
            for i in range(len(tasks)):
                self._send(_Call(node, [owners[i]], [tasks[i]]))
            return
        count = self.gpus or _cpu_nodes()  # one actor per GPU; on CPU, one per host
        for share in shares(tasks, min(count, len(tasks))):
            self._send(_Call(node, [owners[i] for i in share], [tasks[i] for i in share]),
                       actor=True)

    def _send(self, call: _Call, actor: bool = False) -> None:
        if not actor:
            ref = ray_remote.run_task.options(num_cpus=1, max_retries=ray_remote.RETRIES).remote(
                call.node, call.tasks, self.hub, self.fault, self.threads)
        else:
            # Models side by side share each GPU as a local run shares its one GPU.
            resources = ({"num_gpus": 1 / max(1, self.models), "num_cpus": 1} if self.gpus
                         else {"num_cpus": 1})
            retries = ray_remote.RETRIES
            call.actor = ray_remote.ModelActor.options(  # type: ignore[attr-defined]
                max_restarts=retries, max_task_retries=retries, **resources).remote(
                call.node, f"{call.node.name}#{len(self.pending)}")
            ref = call.actor.run.remote(call.tasks, self.hub, self.fault, self.threads)
        self.pending[ref] = call

    def gather(self) -> list[Outcomes]:
        found: list[Outcomes] = []
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
            for ref in ready:
                call = self.pending.pop(ref)
                if call.actor is not None:
                    ray.kill(call.actor)  # frees its GPU for the next stage (stage-major)
                try:
                    outcomes, warnings, where = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died past its retries
                    log.info("%s failed on Ray", call.node.name, exc_info=True)
                    if call.actor is not None and len(call.tasks) > 1:
                        self._isolate(call)  # find the video that kills it: the others go on
                        continue
                    found.append(self._failed(call, exc))
                    self.bars[call.node.name].advance(len(call.tasks))
                    continue
                for warning in warnings:
                    self.ctx.warn(warning)
                found.append({call.owners[i]: {n: _stamped(out, where) for n, out in o.items()}
                              for i, o in outcomes.items()})
                self.bars[call.node.name].advance(len(call.tasks))
        return found

    def _isolate(self, call: _Call) -> None:
        """Each video of a dead actor's share on its own actor (resuming from checkpoints)."""
        for owner, task in zip(call.owners, call.tasks, strict=True):
            self._send(_Call(call.node, [owner], [task]), actor=True)

    def _failed(self, call: _Call, exc: Exception) -> Outcomes:
        first = str(exc).strip().splitlines()
        reason = f"worker failed: {type(exc).__name__}: {first[0][:200] if first else ''}"
        if call.node.optional:
            self.ctx.warn(f"{call.node.name}: {reason}")
            return {}
        return {owner: {s.name: Failure(s.name, f"{task[s.name].video.source}: {s.name}: {reason}")
                        for s in parts(call.node)}
                for owner, task in zip(call.owners, call.tasks, strict=True)}

    def stop(self) -> None:
        for ref, call in self.pending.items():
            if call.actor is not None:
                ray.kill(call.actor, no_restart=True)
            else:
                ray.cancel(ref, force=True)
        # Return only once the workers are gone: a rerun must not race a dying writer.
        ray.wait(list(self.pending), num_returns=len(self.pending), timeout=10)

    def close_bars(self) -> None:
        for bar in self.bars.values():
            bar.close()


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


def _cpu_nodes() -> int:
    nodes = cast(Any, ray).nodes()
    return max(1, sum(1 for n in nodes if n.get("Alive") and n.get("Resources", {}).get("CPU")))


def _stamped(outcome: Any, where: dict[str, Any]) -> Any:
    if isinstance(outcome, StageOutput):
        return dataclasses.replace(outcome, timing={**outcome.timing, "ran_on": where})
    return outcome
