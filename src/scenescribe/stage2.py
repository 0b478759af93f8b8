"""Stage 2: captions per vision-language model over the cached Stage 1 records."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from scenescribe.assemble import iter_records, safe_name
from scenescribe.captions.base import CaptionRequest
from scenescribe.progress import Progress
from scenescribe.records import SceneRecord
from scenescribe.stages import guarded
from scenescribe.store import JsonlCheckpoint
from scenescribe.workspace import VideoJob

log = logging.getLogger("scenescribe.stage2")


def grounding_context(record: SceneRecord) -> str:
    """The scene's Stage 1 facts as prompt text, for grounded captions."""
    parts = []
    if record.transcript.text:
        parts.append(f'Speech in this scene: "{record.transcript.text.strip()}"')
    if record.objects:
        parts.append("Objects detected: " + ", ".join(
            f"{o.label} (x{o.max_count})" for o in record.objects))
    if record.sounds:
        parts.append("Sounds heard: " + ", ".join(s.label for s in record.sounds))
    return "\n".join(parts)


def caption_requests(job: VideoJob, todo: set[int], grounding: bool) -> list[CaptionRequest]:
    requests = []
    for record in iter_records(job, with_captions=False):
        if record.index not in todo or not record.frames:
            continue
        frames = tuple(str(job.out_dir / f.path) for f in record.frames)
        context = grounding_context(record) if grounding else ""
        requests.append(CaptionRequest(record.index, frames, context))
    return requests


def run_captioner(captioner: Any, load_s: float, jobs: Sequence[VideoJob], grounding: bool,
                  progress: Progress) -> None:
    """Caption every scene of every video with one model, resuming from its checkpoints.

    Scenes of all videos go to the captioner as one stream, so batches stay full even when each
    video has only a few scenes; each caption is routed back to its video's checkpoint.
    """
    model = captioner.name
    stage = f"captions[{model}]"
    open_jobs: list[tuple[VideoJob, str, JsonlCheckpoint, int]] = []
    pooled: list[CaptionRequest] = []
    owner: dict[int, tuple[int, int]] = {}  # pooled id -> (position in open_jobs, scene index)
    for job in jobs:
        if not job.ok or job.info is None:
            continue
        with guarded(job, stage):
            key = job.key(job.frames_key, captioner.cache_key(), grounding)
            ckpt = JsonlCheckpoint(job.work_dir / f"captions-{safe_name(model)}-{key}.jsonl")
            todo = {s.index for s in job.scenes if s.index not in ckpt.done}
            requests = caption_requests(job, todo, grounding)
            for r in requests:
                owner[len(pooled)] = (len(open_jobs), r.index)
                pooled.append(replace(r, index=len(pooled)))
            open_jobs.append((job, key, ckpt, len(requests)))
    start = time.perf_counter()
    try:
        if pooled:
            for pooled_id, caption in captioner.caption(pooled, progress):
                position, index = owner[pooled_id]
                ckpt = open_jobs[position][2]
                ckpt.append({"index": index, "caption": caption.to_dict()})
    except Exception as exc:  # the model broke mid-stream: every video still open failed
        log.exception("%s failed", stage)
        for job, _, ckpt, _ in open_jobs:
            ckpt.close()  # finished captions stay in the partial files for the rerun
            job.fail(f"{job.source}: {stage}: {type(exc).__name__}: {exc}")
        return
    elapsed = time.perf_counter() - start
    for job, key, ckpt, count in open_jobs:
        with guarded(job, stage):
            if not ckpt.complete:
                ckpt.finish()
            job.remember_captions(model, key)
            job.models[stage] = captioner.facts()
            # Shared batches: each video is charged its share of the time by scene count.
            share = elapsed * count / len(pooled) if pooled else 0.0
            job.record_timing(stage, backend=model, load_s=load_s, cached=not count,
                              scenes=count, compute_s=share)
