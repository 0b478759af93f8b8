"""Stage 1 as graph stages: probe, shots, frames, and what every model stage shares
(``LazyLoad``, ``ModelStage``). The components (speech, sounds, objects) are in
``component_stages`` (their table) and ``speech_stages``, ``sounds_stages``, ``objects_stages``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from scenescribe.backend import Backend
from scenescribe.graph import (
    Milestone,
    Outcome,
    RunContext,
    Stage,
    StageOutput,
    Task,
    Video,
    each,
)
from scenescribe.knobs import env_count
from scenescribe.media import probe
from scenescribe.media.spool import FrameSpool
from scenescribe.options import FrameOptions, to_dict
from scenescribe.progress import PrefixedProgress, Progress
from scenescribe.records import FrameRef, Scene, VideoInfo
from scenescribe.sampling import FrameWaits, sample_scene_frames
from scenescribe.shots import cuts_to_scenes
from scenescribe.shots.base import Cut, ShotDetector
from scenescribe.store import JsonlCheckpoint, atomic_write_json, fingerprint_file, read_json, stable_hash

log = logging.getLogger("scenescribe.stages")
PROBE_VERSION = 1  # bump when what the probe records changes
FRAMES_VERSION = 1  # bump when frame sampling changes its output


class LazyLoad:
    """Loads a backend the first time a video needs it: a fully cached rerun loads nothing.

    ``seconds`` is the load's own time; ``wait_seconds`` the time it spent waiting for other
    stages' loads (the process lock: their imports and ``from_pretrained``), reported apart so
    that loads run side by side are not each charged for the others' (on the H200, speech,
    sounds and objects showed 12.7, 13.0 and 13.7 s: one 12.7 s load and two that waited for it).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.seconds = 0.0
        self.wait_seconds = 0.0
        self.done_at = 0.0  # time.perf_counter() when this object's load ended
        self._taken = threading.Lock()

    def __call__(self) -> None:
        if not self.backend.loaded:
            start = time.perf_counter()
            self.backend.load()
            self.done_at = time.perf_counter()
            self._note(self.done_at - start)

    def in_background(self) -> threading.Thread:
        """This load on a thread of its own (started); a failure is left for the backend's
        next ``load`` to raise where the model is needed."""
        def load() -> None:
            try:
                self()
            except Exception:  # raised again, and reported, where the model is needed
                log.info("%s: background load failed", self.backend.name, exc_info=True)

        thread = threading.Thread(target=load, name=f"load-{self.backend.name}", daemon=True)
        thread.start()
        return thread

    def taken_from_backend(self) -> float:
        """Report the load a backend did by itself (inside its own call) as if done here; its
        own seconds the first time (to take out of that call's compute time), else 0."""
        timing = getattr(self.backend, "load_timing", None)
        with self._taken:  # two videos' calls may end at once: one of them took the load
            if not self.backend.loaded or self.seconds or not isinstance(timing, dict):
                return 0.0
            self._note(float(timing.get("load_s", 0.0)))
            return self.seconds

    def _note(self, elapsed: float) -> None:
        """A load of ``elapsed`` seconds: its wait for other loads (the backend's
        ``load_timing``) apart from its own time."""
        self.wait_seconds = float(getattr(self.backend, "load_timing", {}).get("wait_s", 0.0))
        self.seconds = elapsed - self.wait_seconds

    def timing(self) -> dict[str, float]:
        """The load's own seconds and its wait for other loads; and where the backend timed
        them (``Backend.load``), its imports' and its device start-up's seconds, CPU seconds
        and context switches (``load_imports_s``, ``load_imports_cpu_s``, ...)."""
        phases = {f"load_{k}": float(v) for k, v in getattr(self.backend, "load_timing", {}).items()
                  if k.startswith(("imports_", "device_"))} if self.seconds else {}
        return {"load_s": self.seconds, "load_wait_s": self.wait_seconds, **phases}


def _named(ctx: RunContext, task: Task) -> Progress:
    return PrefixedProgress(ctx.progress, task.name)


class ProbeStage(Stage):
    """What the file holds (streams, duration, rotation); keyed by the file's content."""

    name = "probe"

    def identity(self) -> dict[str, Any]:
        return {"version": PROBE_VERSION}

    def key(self, video: Video, input_keys: Mapping[str, str]) -> str:
        return stable_hash({"stage": self.name, "identity": self.identity(),
                            "content": fingerprint_file(video.source)})

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        return each(self.name, tasks, self._one, ctx)

    def _one(self, task: Task) -> StageOutput:
        path = task.video.folder.stage_file(self.name, task.key, "json")
        start = time.perf_counter()
        cached = read_json(path) if path.exists() else None
        if isinstance(cached, dict):
            info = dataclasses.replace(VideoInfo.from_dict(cached), path=str(task.video.source))
        else:
            info = probe(task.video.source)
            atomic_write_json(path, info.to_dict())
            task.video.folder.remove_stale(self.name, path)
        meta = {"info": info, "fingerprint": fingerprint_file(task.video.source)}  # memoised
        return StageOutput(task.key, cached is not None, meta=meta,
                           timing={"compute_s": time.perf_counter() - start})


class ShotsStage(Stage):
    name = "shots"
    inputs = ("probe",)
    field = "scene"
    concurrent = True  # beside speech, which needs only the probe
    # A video's frames are all decoded, though the network may still be scoring them; and the
    # spool consumer's frames of it are all on disk.
    DECODED = Milestone("shots", "decoded")
    SPOOLED = Milestone("shots", "spooled")
    milestones = (DECODED.name, SPOOLED.name)

    def __init__(self, detector: ShotDetector) -> None:
        self.detector = detector
        self.load = LazyLoad(detector)
        # A later stage that wants frames of the same decode (the object detector's ticks):
        # its ``spool_for(task)`` gives a spool for them or None (``media.spool``).
        self.spool_consumer: SpoolConsumer | None = None
        self._decoding = threading.BoundedSemaphore(1)  # turns to decode (``run`` sizes it)

    def identity(self) -> dict[str, Any]:
        return self.detector.cache_key()

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        # Several videos side by side: one video's serial parts (start-up, its last segment)
        # overlap the next one's decoding. Only ``at_once`` decode at a time (each decode
        # spreads over the cores), but a video whose decoders are done gives up its turn while
        # its network still scores the frames: on W1 (H200) the cores were 60% idle for 4-5 s
        # while the first two videos' networks ran and the next two waited.
        at_once = videos_at_once(self.detector, len(tasks), "SCENESCRIBE_SHOT_VIDEOS")
        self._decoding = threading.BoundedSemaphore(at_once)
        threads = min(len(tasks), 2 * at_once) if self.detector.concurrent_videos else 1
        return each(self.name, tasks, lambda task: self._one(task, ctx), ctx, threads)

    def _one(self, task: Task, ctx: RunContext) -> StageOutput:
        info = task.info
        path = task.video.folder.stage_file(self.name, task.key, "json")
        data = read_json(path) if path.exists() else None
        cached = isinstance(data, dict) and isinstance(data.get("scenes"), list)
        if not cached and info.has_video and not self.detector.loads_while_decoding:
            self.load()  # before the clock: load time is reported apart
        start = time.perf_counter()
        if cached:
            assert isinstance(data, dict)
            scenes = [Scene.from_dict(s) for s in data["scenes"]]
        else:
            cuts: list[Cut] = []
            if info.has_video:
                with self._decode_turn(task, ctx) as decoded:
                    start = time.perf_counter()  # waiting for a turn is not this video's compute
                    cuts = self._detect(task, ctx, decoded)
            # A detector that loads while it decodes: its load is reported apart (its wait for
            # the process lock stays in this video's compute time, beside the decoding).
            start += self.load.taken_from_backend()
            scenes = cuts_to_scenes(info, cuts, self.detector.options)
            atomic_write_json(path, {"scenes": [s.to_dict() for s in scenes]})
            task.video.folder.remove_stale(self.name, path)
        return StageOutput(task.key, cached, lines={s.index: s.to_dict() for s in scenes},
                           facts=self.detector.facts(), timing={
                               "backend": self.detector.name, **self.load.timing(),
                               "compute_s": time.perf_counter() - start})

    @contextlib.contextmanager
    def _decode_turn(self, task: Task, ctx: RunContext) -> Iterator[Callable[[], None]]:
        """Wait for a turn to decode; yields what gives it up once the video is decoded (else
        it is given up on leaving)."""
        self._decoding.acquire()
        held = [True]
        lock = threading.Lock()

        def decoded() -> None:
            with lock:
                if not held[0]:
                    return
                held[0] = False
            self._decoding.release()
            ctx.reach(task.video, self.DECODED)

        try:
            yield decoded
        finally:
            with lock:
                mine, held[0] = held[0], False
            if mine:
                self._decoding.release()

    def _detect(self, task: Task, ctx: RunContext, decoded: Callable[[], None]) -> list[Cut]:
        """The cuts, filling the consumer's spool from the same decode."""
        spool = None if self.spool_consumer is None else self.spool_consumer.spool_for(task)
        if spool is not None:
            spool.on_sealed = lambda: ctx.reach(task.video, self.SPOOLED)
        try:
            cuts = self.detector.detect(task.info, _named(ctx, task), spool, decoded)
        except BaseException:
            if spool is not None:
                spool.remove()
            raise
        if spool is not None and not spool.sealed:
            spool.remove()  # a backend that keeps no frames: the consumer decodes its own
        return cuts

    def close(self) -> None:
        self.detector.unload()


class SpoolConsumer(Protocol):
    def spool_for(self, task: Task) -> FrameSpool | None: ...


COMPONENT_VIDEOS = "SCENESCRIBE_COMPONENT_VIDEOS"  # knob: Stage 1 components' videos at once


def videos_at_once(backend: Backend, videos: int | None, knob: str,
                   default: int | None = None) -> int:
    """Videos a stage runs side by side, for backends that allow it (``concurrent_videos``):
    ``default``, or one per 8 cores when None (each video's decode already spreads over the
    cores, two overlap their serial parts and waits), so a small machine runs one at a time;
    never more than ``videos`` (None: no bound). ``knob`` (an environment variable) overrides."""
    if not backend.concurrent_videos:
        return 1
    at_once = env_count(knob)
    if at_once is None:
        at_once = (os.cpu_count() or 1) // 8 if default is None else default
    return max(1, at_once if videos is None else min(videos, at_once))


def _resume(task: Task, stage: str) -> tuple[JsonlCheckpoint, list[Scene]]:
    """The stage's checkpoint and the scenes it still lacks."""
    ckpt = JsonlCheckpoint(task.video.folder.stage_file(stage, task.key))
    return ckpt, [s for s in task.scenes if s.index not in ckpt.done]


def _finish(task: Task, stage: str, ckpt: JsonlCheckpoint) -> None:
    if not ckpt.complete:
        ckpt.finish()
        task.video.folder.remove_stale(stage, ckpt.final)


class FramesStage(Stage):
    """Each scene's sampled frames, saved once as JPEG for every later model."""

    name = "frames"
    inputs = ("probe", "shots")
    field = "frames"
    concurrent = True
    waves = True  # a video's frames as soon as its shots are found

    def __init__(self, options: FrameOptions) -> None:
        self.options = options

    def identity(self) -> dict[str, Any]:
        return {"version": FRAMES_VERSION, "options": to_dict(self.options)}

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        return each(self.name, tasks, lambda task: self._one(task, ctx), ctx)

    def _one(self, task: Task, ctx: RunContext) -> StageOutput:
        ckpt, todo = self.resume(task)
        waits = FrameWaits()
        with ckpt:
            start = time.perf_counter()
            for index, refs in sample_scene_frames(task.info, todo, self.options,
                                                   task.video.folder.root, _named(ctx, task),
                                                   waits=waits):
                ckpt.append(frames_line(index, refs))
            return self.output(task, ckpt, todo, time.perf_counter() - start, waits)

    def resume(self, task: Task) -> tuple[JsonlCheckpoint, list[Scene]]:
        """The checkpoint and the scenes still to sample."""
        root = task.video.folder.root
        ckpt = JsonlCheckpoint(task.video.folder.stage_file(self.name, task.key))
        for index, line in list(ckpt.done.items()):  # JPEGs deleted or damaged since: again
            if not all(jpeg_intact(root / f["path"]) for f in line.get("frames", ())):
                del ckpt.done[index]
                ckpt.final.unlink(missing_ok=True)
        return ckpt, [s for s in task.scenes if s.index not in ckpt.done]

    def output(self, task: Task, ckpt: JsonlCheckpoint, todo: list[Scene],
               seconds: float, waits: FrameWaits | None = None) -> StageOutput:
        """The output once ``ckpt`` holds every scene (it is finished here); ``waits`` adds
        where the saving thread waited (decoded frames, JPEG writes) to the timing."""
        _finish(task, self.name, ckpt)
        timing = {"load_s": 0.0, "compute_s": seconds}
        if waits is not None:
            timing.update(decode_wait_s=waits.decode_s, write_wait_s=waits.write_s)
        return StageOutput(task.key, not todo, lines=dict(ckpt.done), timing=timing)


def jpeg_intact(path: Path) -> bool:
    """Whether ``path`` is a whole JPEG as the frames stage writes it: it starts with the
    start-of-image marker and ends with the end-of-image one. A cut-off or emptied file would
    otherwise pass for done, and every later caption of its scene would fail on it."""
    try:
        with path.open("rb") as f:
            head = f.read(2)
            f.seek(0, 2)
            if f.tell() < 4:
                return False
            f.seek(-2, 2)
            return head == b"\xff\xd8" and f.read(2) == b"\xff\xd9"
    except OSError:
        return False


def frames_line(index: int, refs: Sequence[FrameRef]) -> dict[str, Any]:
    return {"index": index, "frames": [r.to_dict() for r in refs]}


class ModelStage(Stage):
    """A Stage 1 model over every video, video by video as their inputs are ready (waves);
    subclasses compute one video (``_compute``)."""

    concurrent = True
    waves = True

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.load = LazyLoad(backend)
        # Videos computed at once, across waves: with more than one, a wave of videos that
        # became ready while an earlier one runs starts beside it, and waits here for a free
        # slot. One by default: on W1 (H200, 2026-12-03j) two at once left Stage 1 at 46.7 s
        # against 45.1 s and the whole job at 85.3 s against 81.3 s (the tagger's compute
        # summed 51.5 s against 18.8 s: the GPU, not the decode, is what they share).
        self.waves_at_once = videos_at_once(backend, None, COMPONENT_VIDEOS, default=1)
        self._slots = threading.BoundedSemaphore(self.waves_at_once)

    def identity(self) -> dict[str, Any]:
        return dict(self.backend.cache_key())

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        return each(self.name, tasks, lambda task: self._one(task, ctx), ctx,
                    min(self.waves_at_once, len(tasks)))

    def _one(self, task: Task, ctx: RunContext) -> StageOutput:
        with self._slots:
            return self._compute(task, ctx)

    @abstractmethod
    def _compute(self, task: Task, ctx: RunContext) -> StageOutput:
        """One video's output."""
