"""Objects as two stages: the detector over each whole video, then tracking within the scenes.

``detections`` runs the model. Like ``speech`` its inputs are the probe alone: every sampling
tick of the video is looked at whatever the cuts, so new shot settings track the stored boxes
again without detecting anything. It reads its frames from the spool the shot detector's decode
filled (``media.spool``, ``spool_for``): the video is decoded once. It starts on a video once
that spool is sealed (``ShotsStage.SPOOLED``), while the shot network may still be scoring the
frames, else once the video's shots are found. Without a spool (shots cached, the frames too
large for the disk budget, a shot backend that keeps none) it decodes them itself, after the
shots: beside them a second decode starved both (W1 on the H200: Stage 1 46.8 s,
``results/h200-2026-12-04-t``).
Its checkpoint holds one line per ``CHUNK_TICKS`` ticks, so a crash loses at most one chunk.
``objects`` (a ``ComponentStage``) is the cheap part: each scene's stored boxes through a fresh
tracker; it fills the records' ``objects``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from scenescribe.graph import RunContext, StageOutput, Task
from scenescribe.media.spool import FrameSpool, discard, fits, remove_others, spool_folder
from scenescribe.objects.base import ObjectTracker
from scenescribe.objects.detected import (
    CHUNK_TICKS,
    FrameBoxes,
    VideoDetections,
    chunk_line,
    in_time_order,
    parse_chunk,
)
from scenescribe.stages import ModelStage, ShotsStage, _finish, _named
from scenescribe.store import JsonlCheckpoint

log = logging.getLogger("scenescribe.stages")
NAMES = -1  # the checkpoint line holding the detector's class names


class DetectionsStage(ModelStage):
    """Each video's untracked boxes at every sampling tick, chunk by chunk."""

    name = "detections"
    inputs = ("probe",)
    after = (ShotsStage.SPOOLED,)

    def __init__(self, backend: ObjectTracker) -> None:
        super().__init__(backend)
        self.detector = backend  # typed

    def spool_for(self, task: Task) -> FrameSpool | None:
        """An empty spool for this stage's frames of ``task``'s video, for a stage that decodes
        the video before this one runs (``task`` is that stage's, with the probe among its
        inputs); None when the detections are stored already, the backend decodes no frames
        or they would not fit on disk (``media.spool.fits``)."""
        info = task.info
        spec = self.detector.tick_spec(info)
        if spec is None or not spec.count or not info.width or not info.height:
            return None
        key = self.key(task.video, {"probe": task.inputs["probe"].key})
        folder = task.video.folder
        if folder.stage_file(self.name, key).exists():
            return None
        where = spool_folder(folder.work, self.name, key)
        if not fits(where, spec, info.width, info.height):
            return None
        return FrameSpool.create(where, spec)

    def _compute(self, task: Task, ctx: RunContext) -> StageOutput:
        ckpt = JsonlCheckpoint(task.video.folder.stage_file(self.name, task.key))
        where = spool_folder(task.video.folder.work, self.name, task.key)
        remove_others(task.video.folder.work, self.name, where)
        try:
            return self._detect(task, ctx, ckpt, where)
        finally:
            if ckpt.complete:  # kept after a failure: a resumed run reads the frames from it
                discard(where)

    def _detect(self, task: Task, ctx: RunContext, ckpt: JsonlCheckpoint,
                where: Path) -> StageOutput:
        info = task.info
        with ckpt:
            chunks = _valid_chunks(ckpt)
            ticks = self.detector.ticks(info) if info.has_video else 0
            missing = [c for c in range(math.ceil(ticks / CHUNK_TICKS)) if c not in chunks]
            if missing or NAMES not in ckpt.done:
                self.load()  # before the clock: load time is reported apart
            if NAMES not in ckpt.done:
                ckpt.append({"index": NAMES, "names": {str(k): v for k, v in
                                                       self.detector.names.items()}})
            start = time.perf_counter()
            wanted = [k for c in missing for k in range(c * CHUNK_TICKS,
                                                        min(ticks, (c + 1) * CHUNK_TICKS))]
            spec = self.detector.tick_spec(info)
            spool = FrameSpool.open(where, spec) if wanted and spec is not None else None
            found = self.detector.detect_frames(
                info, wanted, _named(ctx, task),
                None if spool is None else spool.picks(wanted)) if wanted else ()
            for index, frames in _by_chunk(found, missing):
                ckpt.append(chunk_line(index, frames))
                chunks[index] = frames
            seconds = time.perf_counter() - start
            _finish(task, self.name, ckpt)
        names = {int(k): str(v) for k, v in ckpt.done[NAMES]["names"].items()}
        detected = VideoDetections(in_time_order(f for c in sorted(chunks) for f in chunks[c]),
                                   names)
        return StageOutput(task.key, not missing, meta={"detected": detected},
                           facts=self.backend.facts(),
                           timing={"backend": self.backend.name, **self.load.timing(),
                                   "compute_s": seconds, "frames": len(detected.frames),
                                   "spooled": spool is not None})

    # The objects stage, run after this one, unloads the shared backend.


def _valid_chunks(ckpt: JsonlCheckpoint) -> dict[int, list[FrameBoxes]]:
    """The checkpoint's chunks that parse; a damaged one is dropped (detected again)."""
    chunks: dict[int, list[FrameBoxes]] = {}
    for index, line in list(ckpt.done.items()):
        if index == NAMES:
            names = line.get("names")
            if isinstance(names, dict) and all(k.lstrip("-").isdigit() for k in names):
                continue
        elif isinstance(index, int) and index >= 0:
            try:
                chunks[index] = parse_chunk(line)
                continue
            except (ValueError, TypeError):
                pass
        log.warning("%s: line %r is damaged; detecting it again", ckpt.final, index)
        del ckpt.done[index]
        ckpt.final.unlink(missing_ok=True)  # rewritten whole by ``finish``
    return chunks


def _by_chunk(frames: Iterator[FrameBoxes] | Sequence[FrameBoxes],
              chunks: Sequence[int]) -> Iterator[tuple[int, list[FrameBoxes]]]:
    """``frames`` (in time order) grouped into the ``chunks`` they were detected for, each
    given once the first frame past it arrives (it is then whole), and every chunk in the end,
    those that no frame fell in with none."""
    pending = list(chunks)
    held: list[FrameBoxes] = []
    for frame in frames:
        chunk = frame.tick // CHUNK_TICKS
        while pending and pending[0] < chunk:
            yield pending.pop(0), held
            held = []
        held.append(frame)
    while pending:
        yield pending.pop(0), held
        held = []
