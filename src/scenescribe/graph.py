"""The stage graph: stages declare inputs, the record field they fill and their identity.

A stage's cache key is derived from its identity and the keys of its inputs, so a change
anywhere upstream changes every key downstream, and nothing else does. Stages never share
mutable state: a stage reads its inputs' outputs and returns its own. Stages with the same
inputs that gain from working together (one decode pass feeding frames and objects) are planned
as one ``Fused`` node: each part keeps its own name, key and output. When and on which videos a
node runs is ``scheduler``'s business; ``execute`` is how every executor runs one.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenescribe.errors import ScenescribeError
from scenescribe.progress import Progress
from scenescribe.records import Scene, VideoInfo
from scenescribe.store import stable_hash
from scenescribe.workspace import WorkFolder

log = logging.getLogger("scenescribe.graph")

Line = Mapping[str, Any]


@dataclass(frozen=True)
class StageOutput:
    """What one stage produced for one video.

    ``lines`` maps scene index to that scene's result (the checkpoint's lines); ``meta`` holds
    whole-video results (the probe's video info, the detected language). ``cached`` is True when
    the result was reused from an earlier run.
    """

    key: str
    cached: bool
    lines: Mapping[int, Line] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    timing: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] | None = None  # the model behind it, for run.json
    errors: Mapping[int, str] = field(default_factory=dict)  # scenes that failed (not cached)


@dataclass(frozen=True)
class Video:
    """One input and its output folder; fixed for the whole run."""

    source: Path
    folder: WorkFolder


@dataclass(frozen=True)
class Task:
    """One video's share of a stage's work: its inputs' outputs and the key to compute under."""

    video: Video
    key: str
    inputs: Mapping[str, StageOutput]

    @property
    def info(self) -> VideoInfo:
        info = self.inputs["probe"].meta["info"]
        assert isinstance(info, VideoInfo)
        return info

    @property
    def scenes(self) -> list[Scene]:
        return [Scene.from_dict(line) for _, line in sorted(self.inputs["shots"].lines.items())]

    @property
    def name(self) -> str:
        return self.video.source.name


class StageFailed(Exception):
    """Raised inside a stage for one video: that video stops, the others go on."""


@dataclass(frozen=True)
class Failure:
    stage: str
    reason: str


Outcome = StageOutput | Failure


@dataclass(frozen=True)
class Milestone:
    """A point ``stage`` reaches for one video before its outcome (``RunContext.reach``), say
    the shot detector's decode of it being done. A stage naming it in ``after`` may start on
    that video from then on, or once ``stage``'s outcome is in, whichever comes first: where it
    is never reached (cached work, a backend without it, another executor) the stage is simply
    waited for."""

    stage: str
    name: str

    def __str__(self) -> str:
        return f"{self.stage}:{self.name}"


Follows = str | Milestone  # what ``after`` names: a stage, or a milestone of one


def upstream(node: Stage | Fused) -> list[str]:
    """The stages ``node`` reads or follows (a milestone counts as its stage)."""
    return [*node.inputs, *(a.stage if isinstance(a, Milestone) else a for a in node.after)]


class Stage(ABC):
    """A step of the pipeline. Subclasses set ``name``, ``inputs`` and ``field``."""

    name: str = ""
    inputs: tuple[str, ...] = ()
    field: str = ""  # the scene record field it fills ("" when none)
    concurrent: bool = False  # may run beside other stages (else beside concurrent ones only)
    # Stages (or their milestones) it must follow though it reads none of their output.
    after: tuple[Follows, ...] = ()
    milestones: tuple[str, ...] = ()  # the milestones it reaches (``Milestone.name``)
    optional: bool = False  # its failure is a warning, not the video's failure (captions)
    # May start on the videos whose inputs are done while others are still upstream, and run
    # again for later ones (its model stays loaded): a caption stage then starts on the first
    # video's frames, not the last one's.
    waves: bool = False
    # Waves that may run at once: a wave of videos that became ready while an earlier one
    # runs starts beside it (only for stages whose ``run`` calls may overlap; each bounds how
    # many videos it computes at once across them).
    waves_at_once: int = 1

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What determines the output: backend, checkpoint, revision, output-changing options."""

    def key(self, video: Video, input_keys: Mapping[str, str]) -> str:
        """Derived from identity and input keys only (the probe adds the file's content)."""
        return stable_hash({"stage": self.name, "identity": self.identity(),
                            "inputs": dict(sorted(input_keys.items()))})

    @abstractmethod
    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        """Compute (or reuse) this stage's output for each task; keyed by position in ``tasks``."""

    def preload(self) -> None:  # noqa: B027 - most stages load nothing worth starting early
        """Load the model ahead of the stage's first video (a side-by-side run calls it on a
        thread of its own once Stage 1 computes something fresh). A failure here is left for
        ``run``'s own load to report."""

    def close(self) -> None:  # noqa: B027 - most stages hold nothing to free
        """Free what the stage loaded (its model)."""


class Fused(ABC):
    """Stages with the same inputs computed together by one node (say from one decode pass).

    Each part keeps its own key, checkpoint and output, reported under its own name; the graph
    plans the node in the parts' place. ``run_parts`` gets, per video, one ``Task`` per part.
    """

    def __init__(self, parts: Sequence[Stage]) -> None:
        if len(parts) < 2 or any(p.inputs != parts[0].inputs for p in parts):
            raise ValueError("a fused node joins two or more stages with the same inputs")
        self.parts = tuple(parts)
        self.name = "+".join(p.name for p in parts)
        self.inputs = parts[0].inputs
        self.concurrent = all(p.concurrent for p in parts)
        self.after: tuple[Follows, ...] = tuple(dict.fromkeys(a for p in parts for a in p.after))
        self.milestones = tuple(dict.fromkeys(m for p in parts for m in p.milestones))
        self.optional = all(p.optional for p in parts)
        self.waves = all(p.waves for p in parts)
        self.waves_at_once = 1

    @abstractmethod
    def run_parts(self, tasks: Sequence[Mapping[str, Task]],
                  ctx: RunContext) -> dict[int, dict[str, Outcome]]:
        """Each part's outcome per video (keyed by position in ``tasks``, then part name)."""

    def preload(self) -> None:
        for part in self.parts:
            part.preload()

    def close(self) -> None:
        for part in self.parts:
            part.close()


Node = Stage | Fused


def parts(node: Node) -> tuple[Stage, ...]:
    """The stages a node computes: itself, or a fused node's parts."""
    return node.parts if isinstance(node, Fused) else (node,)


Spans = dict[str, tuple[float, float]]  # stage name -> when its node started and ended
Finished = dict[str, dict[str, float]]  # video source -> stage name -> when its outcome came


Listener = Callable[["Video", Mapping[str, "Outcome"]], None]
MilestoneListener = Callable[["Video", Milestone], None]


@dataclass
class RunContext:
    """What every stage may use: progress, and a place for run-wide warnings (thread-safe).
    ``spans`` gets each stage's start and end on the ``time.perf_counter`` clock, ``finished``
    when each video's outcome of each stage (or milestone) was reported (same clock);
    ``listener`` and ``milestones_heard`` (set by the scheduler) hear each video's outcome and
    milestone as soon as a stage has it."""

    progress: Progress
    warnings: list[str] = field(default_factory=list)
    spans: Spans = field(default_factory=dict)
    finished: Finished = field(default_factory=dict)
    listener: Listener | None = None
    milestones_heard: MilestoneListener | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def warn(self, message: str) -> None:
        log.info("%s", message)  # the run summary prints it once
        with self._lock:
            self.warnings.append(message)

    def report(self, video: Video, outcomes: Mapping[str, Outcome]) -> None:
        """Tell the scheduler one video's outcome of a stage before the whole stage is done,
        so that what needs only this video can start."""
        now = time.perf_counter()
        with self._lock:
            self.finished.setdefault(str(video.source), {}).update(dict.fromkeys(outcomes, now))
        if self.listener is not None:
            self.listener(video, outcomes)

    def reach(self, video: Video, milestone: Milestone) -> None:
        """Tell the scheduler a stage reached ``milestone`` for ``video`` (any thread)."""
        now = time.perf_counter()
        with self._lock:
            self.finished.setdefault(str(video.source), {})[str(milestone)] = now
        if self.milestones_heard is not None:
            self.milestones_heard(video, milestone)


class Graph:
    """Nodes in plan order, checked to form a DAG whose inputs all exist; ``stages`` by name
    (a fused node's parts included)."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = list(nodes)
        self.stages: dict[str, Stage] = {}
        for node in nodes:
            missing = [i for i in upstream(node) if i not in self.stages]
            if missing:
                raise ValueError(f"stage {node.name!r} needs {missing}, not planned before it")
            unknown = [str(a) for a in node.after if isinstance(a, Milestone)
                       and a.name not in self.stages[a.stage].milestones]
            if unknown:
                raise ValueError(f"stage {node.name!r} follows {unknown}, never reached")
            for stage in parts(node):
                if stage.name in self.stages:
                    raise ValueError(f"stage {stage.name!r} is planned twice")
                self.stages[stage.name] = stage

    def levels(self) -> list[list[Node]]:
        """Nodes grouped so each group's inputs are all in earlier groups (plan order kept)."""
        depth: dict[str, int] = {}  # by stage name
        found: list[int] = []  # by node
        for node in self.nodes:
            found.append(1 + max((depth[i] for i in upstream(node)), default=-1))
            depth.update((stage.name, found[-1]) for stage in parts(node))
        groups: list[list[Node]] = [[] for _ in range(max(found, default=-1) + 1)]
        for node, level in zip(self.nodes, found, strict=True):
            groups[level].append(node)
        return groups


Results = list[dict[str, Outcome]]  # per video: stage name -> outcome
Outcomes = dict[int, dict[str, Outcome]]  # a node's: video position -> stage name -> outcome


def failure(outcomes: Mapping[str, Outcome]) -> Failure | None:
    """The first failure among one video's outcomes, if any."""
    return next((o for o in outcomes.values() if isinstance(o, Failure)), None)


def guarded(stage: str, task: Task, fn: Callable[[Task], StageOutput],
            ctx: RunContext | None = None) -> Outcome:
    """Run ``fn`` for one video; its failure becomes that video's ``Failure``, not the run's.
    With ``ctx``, the outcome is reported at once (``RunContext.report``)."""
    outcome = _guarded(stage, task, fn)
    if ctx is not None:
        ctx.report(task.video, {stage: outcome})
    return outcome


def _guarded(stage: str, task: Task, fn: Callable[[Task], StageOutput]) -> Outcome:
    try:
        return fn(task)
    except (ScenescribeError, StageFailed) as exc:
        log.info("%s: %s failed: %s", task.video.source, stage, exc)
        text = str(exc)
        where = "" if str(task.video.source) in text else f"{task.video.source}: "
        return Failure(stage, f"{where}{stage}: {text}")
    except Exception as exc:  # a backend bug must not lose the other videos' work
        log.info("%s: %s failed", task.video.source, stage, exc_info=True)  # traceback with -v
        return Failure(stage, f"{task.video.source}: {stage}: internal error: "
                              f"{type(exc).__name__}: {exc}")


def each(stage: str, tasks: Sequence[Task], fn: Callable[[Task], StageOutput],
         ctx: RunContext | None = None, at_once: int = 1) -> dict[int, Outcome]:
    """``guarded`` over every task: in order, or ``at_once`` tasks side by side on threads
    named after ``stage`` (each outcome reported as it comes)."""
    if at_once <= 1 or len(tasks) <= 1:
        return {i: guarded(stage, task, fn, ctx) for i, task in enumerate(tasks)}
    with ThreadPoolExecutor(at_once, thread_name_prefix=f"{stage}-video") as pool:
        futures = [pool.submit(guarded, stage, task, fn, ctx) for task in tasks]
        return {i: f.result() for i, f in enumerate(futures)}


def execute(node: Node, tasks: Sequence[Mapping[str, Task]], ctx: RunContext,
            close: bool = True) -> Outcomes:
    """Run ``node`` over ``tasks`` (keyed by position in ``tasks``), then free its model
    (unless ``close`` is False: more videos may follow). Executors call this wherever the work
    runs (this process, a Ray worker)."""
    stages = parts(node)
    try:
        if isinstance(node, Fused):
            return node.run_parts(tasks, ctx)
        ran = node.run([t[node.name] for t in tasks], ctx)
        return {i: {node.name: outcome} for i, outcome in ran.items()}
    except Exception as exc:  # a bug outside the per-video guards: never lose other stages
        log.info("%s failed", node.name, exc_info=True)  # traceback with -v
        reason = f"{node.name}: internal error: {type(exc).__name__}: {exc}"
        if node.optional:
            ctx.warn(reason)
            return {}
        return {i: {s.name: Failure(s.name, f"{task[s.name].video.source}: {reason}")
                    for s in stages} for i, task in enumerate(tasks)}
    finally:
        if close:
            node.close()
