"""The frames and objects stages run together per video: the frames first, then the tracker,
or fed by one decode pass (``sampling.decode_once``).

A fused node of the stage graph (``graph.Fused``): each part keeps its own identity, key,
checkpoint and status; only the scheduling (and with ``decode_once`` the pass) is shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from scenescribe.backend import Backend
from scenescribe.errors import ConfigError
from scenescribe.graph import Fused, Outcome, RunContext, StageOutput, Task, guarded
from scenescribe.objects.base import ObjectTracker
from scenescribe.records import FrameRef, Scene
from scenescribe.sampling import sample_and_track, video_passes
from scenescribe.stages import (
    ComponentStage,
    FramesStage,
    _named,
    _resume,
    frames_line,
    objects_line,
)
from scenescribe.store import JsonlCheckpoint


def shares_decode(backend: Backend) -> bool:
    """Whether ``backend`` is a tracker that can take its frames from a shared decode pass."""
    return (isinstance(backend, ObjectTracker)
            and type(backend).track_frames is not ObjectTracker.track_frames)


class FramesAndObjects(Fused):
    """The frames and objects stages per video: frames first, or from one shared decode pass.

    Each keeps its own key, checkpoint and status: where only one needs work for a video, that
    one runs alone. The frames' time runs until their JPEGs are written, the objects' from the
    tracker's start (the frames' end; with one shared pass, the same start) until it is done.
    Each part that finished is kept when the other fails (a tracker crash keeps the frames).
    """

    def __init__(self, frames: FramesStage, objects: ComponentStage) -> None:
        if not shares_decode(objects.backend):
            raise ConfigError(f"{objects.backend.name} decodes its own frames")
        super().__init__([frames, objects])
        self.frames, self.objects = frames, objects

    def run_parts(self, tasks: Sequence[Mapping[str, Task]],
                  ctx: RunContext) -> dict[int, dict[str, Outcome]]:
        """Each video's pass; on a many-core host several videos' passes side by side
        (``sampling.video_passes``), each with its share of the cores and a bounded queue."""
        passes = video_passes(len(tasks))
        if passes == 1:
            return {i: self._one(t[self.frames.name], t[self.objects.name], ctx, 1)
                    for i, t in enumerate(tasks)}
        with ThreadPoolExecutor(passes, thread_name_prefix="video-pass") as pool:
            futures = {i: pool.submit(self._one, t[self.frames.name], t[self.objects.name],
                                      ctx, passes) for i, t in enumerate(tasks)}
            return {i: f.result() for i, f in futures.items()}

    def _one(self, frames: Task, objects: Task, ctx: RunContext,
             passes: int) -> dict[str, Outcome]:
        ckpts: dict[str, tuple[JsonlCheckpoint, list[Scene]]] = {}
        seconds = {self.frames.name: 0.0, self.objects.name: 0.0}
        problem: Exception | None = None
        try:
            ckpts[self.frames.name] = self.frames.resume(frames)
            ckpts[self.objects.name] = _resume(objects, self.objects.name)
            self._decode(frames, ckpts, seconds, ctx, passes)
        except Exception as exc:  # charged below to each part it left unfinished
            problem = exc
        finally:
            for ckpt, _ in ckpts.values():
                ckpt.close()

        def finish(stage: FramesStage | ComponentStage) -> Callable[[Task], StageOutput]:
            def output(task: Task) -> StageOutput:
                if stage.name not in ckpts:
                    assert problem is not None
                    raise problem
                ckpt, todo = ckpts[stage.name]
                if problem is not None and any(s.index not in ckpt.done for s in task.scenes):
                    raise problem
                return stage.output(task, ckpt, todo, seconds[stage.name])
            return output

        return {self.frames.name: guarded(self.frames.name, frames, finish(self.frames), ctx),
                self.objects.name: guarded(self.objects.name, objects, finish(self.objects),
                                                  ctx)}

    def _decode(self, task: Task, ckpts: Mapping[str, tuple[JsonlCheckpoint, list[Scene]]],
                seconds: dict[str, float], ctx: RunContext, passes: int) -> None:
        frames, frame_todo = ckpts[self.frames.name]
        objects, object_todo = ckpts[self.objects.name]
        if object_todo and task.info.has_video:
            self.objects.load()  # before the clock: load time is reported apart
        start = time.perf_counter()

        def on_frames(index: int, refs: list[FrameRef]) -> None:
            frames.append(frames_line(index, refs))
            seconds[self.frames.name] = time.perf_counter() - start  # kept if the tracker fails

        seconds[self.frames.name], seconds[self.objects.name] = sample_and_track(
            task.info, frame_todo, self.frames.options, task.video.folder.root,
            self.objects.backend, object_todo, _named(ctx, task), on_frames=on_frames,
            on_objects=lambda index, found: objects.append(objects_line(index, found)),
            passes=passes)
