"""Objects as two stages: the detector over each whole video, then tracking within the scenes.

``detections`` runs the model. Like ``speech`` its inputs are the probe alone: every sampling
tick of the video is looked at whatever the cuts, so new shot settings track the stored boxes
again without detecting anything. It still follows each video's shots (``after``) unless
``SCENESCRIBE_DETECTIONS_BESIDE_SHOTS=1``: shot detection's segment workers take every core,
and a decode beside them starves both (W1 on the H200: Stage 1 46.8 s, the first shots 19.8 s
in, ``results/h200-2026-12-04-t``; after the shots 42.5-45.3 s on another host, ``-u``). Its checkpoint holds
one line per ``CHUNK_TICKS`` ticks, so a crash loses at most one chunk. ``objects`` (a
``ComponentStage``) is the cheap part: each scene's stored boxes through a fresh tracker; it
fills the records' ``objects``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence

from scenescribe.graph import RunContext, StageOutput, Task
from scenescribe.knobs import env_flag
from scenescribe.objects.base import ObjectTracker
from scenescribe.objects.detected import (
    CHUNK_TICKS,
    FrameBoxes,
    VideoDetections,
    chunk_line,
    in_time_order,
    parse_chunk,
)
from scenescribe.stages import ModelStage, _finish, _named
from scenescribe.store import JsonlCheckpoint

log = logging.getLogger("scenescribe.stages")
NAMES = -1  # the checkpoint line holding the detector's class names
BESIDE_SHOTS = "SCENESCRIBE_DETECTIONS_BESIDE_SHOTS"  # knob: detect from the probe on


class DetectionsStage(ModelStage):
    """Each video's untracked boxes at every sampling tick, chunk by chunk."""

    name = "detections"
    inputs = ("probe",)

    def __init__(self, backend: ObjectTracker) -> None:
        if not env_flag(BESIDE_SHOTS):
            self.after = ("shots",)
        super().__init__(backend)
        self.detector = backend  # typed

    def _compute(self, task: Task, ctx: RunContext) -> StageOutput:
        info = task.info
        ckpt = JsonlCheckpoint(task.video.folder.stage_file(self.name, task.key))
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
            found = self.detector.detect_frames(info, wanted, _named(ctx, task)) if wanted else ()
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
                                   "compute_s": seconds, "frames": len(detected.frames)})

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
