"""When each node of the stage graph runs, and on which videos.

A node starts once every stage it reads (or must follow, ``after``) is done. A node runs over
every video at once (stage-major: its model is loaded once), except a ``waves`` node in a local
side-by-side run: it starts on the videos whose inputs are done while the others are still
upstream, and runs again for each group that becomes ready later, its model loaded throughout.
Stages report each video's outcome as soon as they have it (``RunContext.report``), so on a
folder the caption stage starts on the first video's frames while the shots of the last are
still being found. A waves node that follows a stage's milestone (``graph.Milestone``: the
object detector after the shot detector's decode) may start on a video once that stage reached
it there, before the stage's outcome. Outcomes are merged here, on the scheduling thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from scenescribe.errors import ScenescribeError
from scenescribe.graph import (
    Failure,
    Follows,
    Graph,
    Milestone,
    Node,
    Outcome,
    Outcomes,
    Results,
    RunContext,
    Spans,
    StageOutput,
    Task,
    Video,
    execute,
    failure,
    parts,
    upstream,
)
from scenescribe.knobs import env_count

RunNode = Callable[[Node, "Prepared"], Outcomes]  # an executor's way to run a prepared node


@dataclass
class Prepared:
    """A node's work when it starts: one ``Task`` per part for each video that can run it
    (``owners`` their positions in the run), and the videos that failed before starting."""

    tasks: list[dict[str, Task]]
    owners: list[int]
    early: Outcomes


def prepare(node: Node, videos: Sequence[Video], results: Results,
            only: Collection[int] | None = None) -> Prepared:
    """Each runnable video's tasks for ``node`` (keys derived here, on the planning side);
    ``only`` limits them to those positions in the run."""
    stages = parts(node)
    prepared = Prepared([], [], {})
    for v in range(len(videos)) if only is None else sorted(only):
        video, done = videos[v], results[v]
        if failure(done) is not None:
            continue
        outputs = {n: o for n in node.inputs if isinstance(o := done.get(n), StageOutput)}
        if len(outputs) != len(node.inputs):
            continue  # an optional input stage did not run for this video
        keys = {n: o.key for n, o in outputs.items()}
        try:
            prepared.tasks.append({s.name: Task(video, s.key(video, keys), outputs)
                                   for s in stages})
        except (ScenescribeError, OSError) as exc:  # the input cannot even be read
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            prepared.early[v] = {s.name: Failure(s.name, f"{video.source}: {reason}")
                                 for s in stages}
            continue
        prepared.owners.append(v)
    return prepared


def merge(outcomes: Outcomes, results: Results) -> None:
    """Add a node's outcomes to each video's results."""
    for v, outcome in outcomes.items():
        results[v].update(outcome)


def run_graph(graph: Graph, videos: Sequence[Video], ctx: RunContext, parallel: bool) -> Results:
    """Run every stage over every video in this process; a video that fails a stage skips its
    dependents. Side by side (``parallel``), ``waves`` nodes start per group of ready videos."""

    def run_node(node: Node, prepared: Prepared) -> Outcomes:
        if not prepared.tasks:
            return prepared.early
        outcomes = execute(node, prepared.tasks, ctx, close=False)
        return {**prepared.early, **{prepared.owners[i]: o for i, o in outcomes.items()}}

    waves = ctx if env_count("SCENESCRIBE_WAVES") != 0 else None  # 0: the stage-major schedule
    return schedule(graph, videos, parallel, run_node, spans=ctx.spans, waves=waves,
                    finish=lambda node: node.close())


def schedule(graph: Graph, videos: Sequence[Video], parallel: bool, run_node: RunNode,
             stop: Callable[[], None] | None = None, spans: Spans | None = None,
             waves: RunContext | None = None,
             finish: Callable[[Node], None] | None = None) -> Results:
    """Run the graph's nodes through ``run_node`` and merge their outcomes here, on this thread.

    With ``parallel`` the concurrent nodes run beside anything, the others one at a time (beside
    concurrent ones): so a caption stage starts as soon as the frames are saved while the tracker
    and the sound tagger still run, but two captioners never share the GPU (a ``waves``
    captioner holds its turn until its last video). Without it, one node after another in plan
    order, on this thread. A node's tasks are prepared when it starts, from the results merged
    so far. ``waves`` (a run's context: its stages report each video's outcome there) lets
    ``waves`` nodes run per group of ready videos. ``finish`` (if given) is called once per
    node when it is done for every video. Interrupted, ``stop`` (if given) ends the running
    nodes' work before this waits for their threads; a local run lets them finish their
    checkpoints. ``spans`` (if given) gets each stage's start and end (``time.perf_counter``).
    """
    if not parallel:
        results: Results = [{} for _ in videos]
        for node in graph.nodes:
            start = time.perf_counter()
            try:
                merge(run_node(node, prepare(node, videos, results)), results)
            finally:
                if finish is not None:
                    finish(node)
            if spans is not None:
                spans.update((s.name, (start, time.perf_counter())) for s in parts(node))
        return results
    return _SideBySide(graph, videos, run_node, waves, finish, spans).run(stop)


class _SideBySide:
    """The scheduling loop of a side-by-side run; its state lives on the scheduling thread."""

    def __init__(self, graph: Graph, videos: Sequence[Video], run_node: RunNode,
                 waves: RunContext | None, finish: Callable[[Node], None] | None,
                 spans: Spans | None) -> None:
        self.graph, self.videos, self.run_node = graph, videos, run_node
        self.ctx, self.finish, self.spans = waves, finish, spans
        self.results: Results = [{} for _ in videos]
        self.reached: list[set[Milestone]] = [set() for _ in videos]  # per video
        self.waiting = list(graph.nodes)  # not yet done for every video
        self.done: set[str] = set()  # stages done for every video
        # Per waves node: videos not yet seen ready, and those ready but not yet given to it
        # (checked per video as its outcomes arrive, never by a scan of every video per event).
        in_waves = [n for n in graph.nodes if self._in_waves(n)]
        self.unready = {n.name: set(range(len(videos))) for n in in_waves}
        self.ready: dict[str, set[int]] = {n.name: set() for n in in_waves}
        self.readers = {n.name: n for n in in_waves}
        self.busy: dict[str, int] = {}  # node name -> its runs (waves) in flight
        self.turn: str | None = None  # the non-concurrent node whose turn it is
        self.times: dict[str, list[float]] = {}  # node name -> [first start, last end]
        # The first captioner's load, started once Stage 1 computes (``_preload``): its
        # node's name and thread; ``preloaded`` once tried.
        self.preload: tuple[str, threading.Thread] | None = None
        self.preloaded = False
        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.position = {id(video): v for v, video in enumerate(videos)}  # tasks carry these

    def run(self, stop: Callable[[], None] | None) -> Results:
        if self.ctx is not None:
            self.ctx.listener = self._heard
            self.ctx.milestones_heard = self._reached
        threads = sum(n.waves_at_once if self._in_waves(n) else 1 for n in self.graph.nodes)
        with ThreadPoolExecutor(threads, thread_name_prefix="stage") as pool:
            try:
                while self.waiting:
                    self._start(pool)
                    if not self.waiting:
                        break
                    if not any(self.busy.values()):  # not for a checked graph; never spin
                        raise ValueError(
                            f"stages {[n.name for n in self.waiting]} can never start")
                    self._handle(self.events.get())
            except BaseException:
                if stop is not None:
                    stop()
                raise
            finally:
                if self.ctx is not None:
                    self.ctx.listener = None
                    self.ctx.milestones_heard = None
        return self.results

    def _heard(self, video: Video, outcomes: Mapping[str, Outcome]) -> None:
        """A stage's outcome for one video, from a stage's thread."""
        v = self.position.get(id(video))
        if v is not None:
            self.events.put(("video", v, dict(outcomes)))

    def _reached(self, video: Video, milestone: Milestone) -> None:
        """A stage reached a milestone for one video, from a stage's thread."""
        v = self.position.get(id(video))
        if v is not None:
            self.events.put(("milestone", v, milestone))

    def _handle(self, event: tuple[Any, ...]) -> None:
        if event[0] == "milestone":
            _, v, milestone = event
            self.reached[v].add(milestone)
            self._recheck({v})
            return
        if event[0] == "video":
            _, v, outcomes = event
            self.results[v].update(outcomes)
            if not self.preloaded and any(isinstance(o, StageOutput) and not o.cached
                                          for o in outcomes.values()):
                self._preload()
            self._recheck({v})
            return
        _, node, future = event
        self.busy[node.name] -= 1
        self.times[node.name][1] = time.perf_counter()
        outcomes = future.result()  # a crashed executor raises here
        merge(outcomes, self.results)
        self._recheck(set(outcomes))
        if not self._in_waves(node):
            self._complete(node)

    def _preload(self) -> None:
        """Load a waves node's model now, on a thread of its own: a video's fresh outcome
        means the run's work is not all cached, and the load (seconds for a VLM) then overlaps
        Stage 1 instead of delaying the first wave. Only the first node that will hold the
        GPU turn (the first captioner): two captioners never share the GPU, loaded or not."""
        self.preloaded = True
        node = next((n for n in self.waiting if self._in_waves(n) and not n.concurrent), None)
        if node is None or self.busy.get(node.name) or self.turn not in (None, node.name):
            return
        thread = threading.Thread(target=node.preload, name=f"preload-{node.name}",
                                  daemon=True)
        self.preload = (node.name, thread)
        thread.start()

    def _in_waves(self, node: Node) -> bool:
        return self.ctx is not None and node.waves

    def _settled(self, name: Follows, v: int) -> bool:
        if isinstance(name, Milestone):
            return name in self.reached[v] or self._settled(name.stage, v)
        return name in self.done or name in self.results[v]

    def _recheck(self, videos: set[int] | None = None) -> None:
        """Move the ``videos`` (default: all) whose inputs (and ``after``) are now all settled
        to each waves node's ready set; a failed video is dropped, never given."""
        for name, unready in self.unready.items():
            node = self.readers[name]
            for v in list(unready if videos is None else videos & unready):
                if failure(self.results[v]) is not None:
                    unready.discard(v)
                elif all(self._settled(n, v) for n in (*node.inputs, *node.after)):
                    unready.discard(v)
                    self.ready[name].add(v)

    def _start(self, pool: ThreadPoolExecutor) -> None:
        """Start every node (or wave) that can start; complete the waves nodes that are done."""
        progress = True
        while progress:
            progress = False
            for node in list(self.waiting):
                running = self.busy.get(node.name, 0)
                at_once = node.waves_at_once if self._in_waves(node) else 1
                if running >= at_once or (
                        not node.concurrent and self.turn not in (None, node.name)):
                    continue
                upstream_done = set(upstream(node)) <= self.done
                if self._in_waves(node):
                    ready = sorted(v for v in self.ready[node.name]
                                   if failure(self.results[v]) is None)
                    self.ready[node.name].clear()
                    if not ready and upstream_done and not running:
                        self._complete(node)
                        progress = True
                        continue
                    if not ready:
                        continue
                elif not upstream_done:
                    continue
                else:
                    ready = list(range(len(self.videos)))
                self._submit(pool, node, ready)

    def _submit(self, pool: ThreadPoolExecutor, node: Node, videos: list[int]) -> None:
        self.busy[node.name] = self.busy.get(node.name, 0) + 1
        if not node.concurrent:
            self.turn = node.name
        now = time.perf_counter()
        self.times.setdefault(node.name, [now, now])
        prepared = prepare(node, self.videos, self.results, set(videos))
        future = pool.submit(self.run_node, node, prepared)
        future.add_done_callback(lambda f: self.events.put(("node", node, f)))

    def _complete(self, node: Node) -> None:
        if self.preload is not None and self.preload[0] == node.name:
            self.preload[1].join()  # its model is freed below, never while it is still loading
        self.waiting.remove(node)
        self.unready.pop(node.name, None)
        self.ready.pop(node.name, None)
        self.done.update(stage.name for stage in parts(node))
        self._recheck()  # what read this node's stages may now be ready everywhere
        if self.turn == node.name:
            self.turn = None
        now = time.perf_counter()
        start, end = self.times.setdefault(node.name, [now, now])
        if self.spans is not None:
            self.spans.update((s.name, (start, end)) for s in parts(node))
        if self.finish is not None:
            self.finish(node)
