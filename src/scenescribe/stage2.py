"""Stage 2: captions per vision-language model over the cached Stage 1 records."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
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
    """Caption every scene of every video with one model, resuming from its checkpoint."""
    model = captioner.name
    for job in jobs:
        if not job.ok or job.info is None:
            continue
        with guarded(job, f"captions[{model}]"):
            key = job.key(job.frames_key, captioner.cache_key(), grounding)
            path = job.work_dir / f"captions-{safe_name(model)}-{key}.jsonl"
            with JsonlCheckpoint(path) as ckpt:
                todo = {s.index for s in job.scenes if s.index not in ckpt.done}
                start = time.perf_counter()
                requests = caption_requests(job, todo, grounding)
                if requests:
                    for index, caption in captioner.caption(requests, progress):
                        ckpt.append({"index": index, "caption": caption.to_dict()})
                if not ckpt.complete:
                    ckpt.finish()
            job.remember_captions(model, key)
            job.models[f"captions[{model}]"] = captioner.facts()
            job.record_timing(f"captions[{model}]", backend=model, load_s=load_s,
                              cached=not requests, scenes=len(requests),
                              compute_s=time.perf_counter() - start)
