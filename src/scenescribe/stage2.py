"""Stage 2: one caption stage per vision-language model, over the Stage 1 outputs.

A caption stage's inputs are the frames and, when grounding is on, the Stage 1 components whose
facts go into the prompt; its identity is the model (name, checkpoint, revision, weights) and
only the caption options that change the text. So adding model B never touches model A's key,
and a new speech backend re-captions grounded scenes. Captions that failed are reported but
never cached: the next run retries them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scenescribe import registry
from scenescribe.captions.base import Captioner, CaptionRequest
from scenescribe.errors import ConfigError, ScenescribeError, one_line
from scenescribe.graph import Outcome, RunContext, Stage, StageOutput, Task
from scenescribe.options import CaptionOptions
from scenescribe.records import SceneRecord
from scenescribe.store import JsonlCheckpoint

log = logging.getLogger("scenescribe.stage2")

GROUNDING_INPUTS = ("speech", "sounds", "objects")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A captioner as the user named it: ``NAME`` or ``NAME=/path/to/weights`` (parsed once)."""

    name: str
    weights: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        name, sep, weights = (part.strip() for part in text.partition("="))
        if not name or (sep and not weights):
            raise ConfigError(f"--vlm {text!r}: expected NAME or NAME=/path/to/weights")
        return cls(name, weights or None)


def model_specs(models: Sequence[str]) -> list[ModelSpec]:
    """Parse the run's model list; each name must be a known captioner, named once."""
    specs = [ModelSpec.parse(m) for m in models]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--vlm: {', '.join(repeated)} named more than once")
    for spec in specs:
        registry.get_entry(spec.name, "captioner")  # an unknown name fails before any work
        if spec.weights is not None and not Path(spec.weights).expanduser().exists():
            # Given by hand, so a typo: stop now, not after Stage 1 has run for every video.
            raise ConfigError(f"--vlm {spec.name}={spec.weights}: no such file or folder")
    return specs


def make_captioner(spec: ModelSpec, options: CaptionOptions, device: str,
                   model_dir: Path | None) -> Captioner:
    """The captioner for ``spec`` (not loaded); ``run`` and ``bench`` both build it here."""
    captioner = registry.create(spec.name, "captioner", options=replace(options, weights=spec.weights),
                                device=device, model_dir=model_dir)
    assert isinstance(captioner, Captioner)
    return captioner


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


def caption_request(record: SceneRecord, root: Path, grounding: bool) -> CaptionRequest | None:
    """What a caption stage asks the model for one scene (``None``: no frames to show)."""
    if not record.frames:
        return None
    context = grounding_context(record) if grounding else ""
    return CaptionRequest(record.index, tuple(str(root / f.path) for f in record.frames), context)


# Where the caption engine's time went (``captions.engine.run_batches``), shared out like
# ``compute_s``: waiting for a batch's CPU preparation, and the model's calls.
ENGINE_SPLIT = ("prepare_wait_s", "generate_s")


class CaptionStage(Stage):
    """One model's captions for every scene of every video."""

    field = "captions"
    optional = True  # a model that breaks never loses Stage 1
    waves = True  # starts on the first video whose frames are saved; the model stays loaded

    def __init__(self, spec: ModelSpec, captioner: Captioner, grounded_on: Sequence[str]) -> None:
        self.spec = spec
        self.model = spec.name
        self.name = f"captions[{spec.name}]"
        self.captioner = captioner
        self.grounding = bool(captioner.options.grounding)
        self.inputs = ("probe", "shots", "frames", *grounded_on)
        self.load_s = 0.0
        self._load_lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {**self.captioner.cache_key(), "weights": self.spec.weights}

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> dict[int, Outcome]:
        """Scenes of all videos go to the model as one stream, so batches stay full even when
        each video has only a few scenes; each caption is routed back to its video."""
        ckpts = [JsonlCheckpoint(t.video.folder.stage_file(self.name, t.key)) for t in tasks]
        reused = [c.complete for c in ckpts]  # finished by an earlier run
        pooled: list[CaptionRequest] = []
        owner: list[tuple[int, int]] = []  # pooled id -> (task position, scene index)
        for position, (task, ckpt) in enumerate(zip(tasks, ckpts, strict=True)):
            for request in self._requests(task, set(ckpt.done)):
                owner.append((position, request.index))
                pooled.append(replace(request, index=len(pooled)))
        errors: list[dict[int, str]] = [{} for _ in tasks]
        start = time.perf_counter()
        if pooled:
            try:
                self._load()
            except Exception as exc:  # Stage 1 is never lost to a model that cannot load
                log.info("%s could not load", self.model, exc_info=True)  # traceback with -v
                reason = exc if isinstance(exc, ScenescribeError) else one_line(exc)
                ctx.warn(f"captioner {self.model} cannot run: {reason}")
                return {}
            start = time.perf_counter()
            self._caption(pooled, owner, ckpts, errors, ctx)
        elapsed = time.perf_counter() - start
        facts = self._facts()
        engine = (getattr(self.captioner, "engine_stats", None) or {}) if pooled else {}
        outcomes: dict[int, Outcome] = {}
        for position, (task, ckpt) in enumerate(zip(tasks, ckpts, strict=True)):
            count = sum(1 for p, _ in owner if p == position)
            folder = task.video.folder
            if not errors[position] and not ckpt.complete:
                ckpt.finish()
                folder.remove_stale(self.name, ckpt.final)
            ckpt.close()
            mine = dict(facts)
            earlier = folder.caption_index().get(self.model, {})
            known = earlier.get("key") == task.key
            if not count and known and isinstance(earlier.get("facts"), dict):
                mine = {**earlier["facts"], **mine}  # reused: facts of the run that made them
            if ckpt.complete and (count or not known):
                folder.remember_captions(self.model, task.key,
                                         {n: o.key for n, o in task.inputs.items()}, mine)
            # Shared batches: each video is charged its share of the time by scene count.
            part = count / len(pooled) if pooled else 0.0
            outcomes[position] = StageOutput(
                task.key, reused[position], lines=dict(ckpt.done), errors=errors[position], facts=mine,
                timing={"backend": self.model, "load_s": self.load_s, "scenes": count,
                        "compute_s": elapsed * part,
                        **{key: engine[key] * part for key in ENGINE_SPLIT if key in engine}})
        return outcomes

    def _requests(self, task: Task, done: set[int]) -> list[CaptionRequest]:
        from scenescribe.assemble import build_record

        root = task.video.folder.root
        requests = []
        for scene in task.scenes:
            if scene.index not in done:
                request = caption_request(build_record(scene, task.inputs), root, self.grounding)
                if request is not None:
                    requests.append(request)
        return requests

    def preload(self) -> None:
        """The model loads while Stage 1 runs (LLaVA-v1.6 7B: about 9 s on the H200), not
        after the first video's frames; a load that fails is retried and reported by ``run``."""
        try:
            self._load()
        except Exception:  # run() loads again and reports why; never break the scheduler
            log.info("%s: preload failed; the caption stage will retry", self.model,
                     exc_info=True)

    def _load(self) -> None:
        with self._load_lock:  # a preload and the first wave: one load, timed once
            if not self.captioner.loaded:
                begin = time.perf_counter()
                self.captioner.load()
                self.load_s = time.perf_counter() - begin

    def _caption(self, pooled: list[CaptionRequest], owner: list[tuple[int, int]],
                 ckpts: list[JsonlCheckpoint], errors: list[dict[int, str]],
                 ctx: RunContext) -> None:
        answered: set[int] = set()
        try:
            for pooled_id, caption in self.captioner.caption(pooled, ctx.progress):
                answered.add(pooled_id)
                position, index = owner[pooled_id]
                if caption.error:  # reported, never cached: the next run retries it
                    errors[position][index] = caption.error
                else:
                    ckpts[position].append({"index": index, "caption": caption.to_dict()})
        except Exception as exc:  # the model broke mid-stream: Stage 1 and done captions stay
            log.info("%s failed", self.name, exc_info=True)  # the traceback only with -v
            reason = one_line(exc)
            for pooled_id, (position, index) in enumerate(owner):
                if pooled_id not in answered:
                    errors[position][index] = reason

    def _facts(self) -> Mapping[str, Any]:
        facts = dict(self.captioner.facts())
        decoding = getattr(self.captioner, "decoding", None)
        if callable(decoding) and self.captioner.loaded:
            try:
                facts["decoding"] = decoding()
            except Exception:  # facts are best effort; the captions are what matter
                log.debug("decoding() of %s failed", self.model, exc_info=True)
        return facts

    def close(self) -> None:
        self.captioner.unload()
