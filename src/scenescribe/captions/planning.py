"""Batch planning for transformers captioners: prompts fitted to the model's positions, prompt
lengths counted from image headers, and the batch size from free GPU memory capped at the
family's throughput knee (``batching.knee``)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, ClassVar

from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.batching import knee
from scenescribe.captions.frames import image_size, scene_bytes
from scenescribe.captions.published import fit_context
from scenescribe.captions.static_decode import BUCKET

log = logging.getLogger("scenescribe.captions")

GPU_MEMORY_SHARE = 0.85  # of the free memory a batch may plan to use; the rest absorbs fragmentation


def whole_graph_buckets(batch: int) -> int:
    """``batch`` down to a whole number of the static decoder's graph buckets (when it holds
    one): a graph's padding rows are read at every step like the others. LLaVA-Vicuna's
    memory-derived 36 ran as graphs of 40 rows (and the rest of 64 scenes, 28, as 32): 8 of 72
    rows decoded for nothing, where two batches of 32 pad none."""
    return batch - batch % BUCKET if batch >= BUCKET else batch


class BatchPlanner:
    """Mixed into ``TransformersCaptioner``: the attributes below are the captioner's."""

    name: str
    device: str
    options: Any
    model: Any
    processor: Any
    num_beams: ClassVar[int] = 1
    cpu_batch_size: ClassVar[int] = 4

    def prompt(self, request: CaptionRequest, n_images: int) -> str:
        raise NotImplementedError

    def torch_dtype(self) -> Any:
        raise NotImplementedError

    def position_limit(self) -> int | None:
        """The language model's trained positions (Vicuna-7B: 4,096), if its config says."""
        return getattr(self.model.config.get_text_config(), "max_position_embeddings", None)

    def fit_positions(self, request: CaptionRequest) -> CaptionRequest:
        """Shorten the grounding context so prompt and caption fit the model's positions."""
        limit = self.position_limit()
        if not limit or not request.context.strip():
            return request
        budget = limit - self.options.max_new_tokens

        def count(context: str) -> int:
            return self.prompt_length(replace(request, context=context))

        before = count(request.context)
        if before <= budget:
            return request
        kept = fit_context(request.context, budget, count)
        log.warning("%s: scene %d: prompt of %d tokens plus %d new exceeds the model's %d "
                    "positions; grounding context cut from %d to %d characters", self.name,
                    request.index, before, self.options.max_new_tokens, limit,
                    len(request.context), len(kept))
        return replace(request, context=kept)

    def prompt_length(self, request: CaptionRequest) -> int:
        """Prompt tokens of a scene, image tokens included, from image sizes (no decoding)."""
        sizes = [image_size(p) for p in request.frames]
        text = self.processor.tokenizer(self.prompt(request, len(sizes)))["input_ids"]
        return len(text) + self.image_tokens(sizes)

    def image_tokens(self, sizes: list[tuple[int, int]]) -> int:
        """Tokens the images of one scene expand to; ``sizes`` are ``(height, width)``."""
        counter = getattr(self.processor, "_get_num_multimodal_tokens", None)
        if counter is None or not sizes:
            return 0
        try:
            return int(sum(counter(image_sizes=sizes)["num_image_tokens"]))
        except Exception:  # only a sort key: a processor that cannot count sorts by text length
            return 0

    def batch_size(self, prompt_tokens: int) -> int:
        """Scenes per ``generate`` call: the option, else what free GPU memory holds capped at
        the throughput knee (``[captions] max_batch`` or the family's), else small on CPU."""
        if self.options.batch_size > 0:
            return self.options.batch_size
        if not self.device.startswith("cuda"):
            return self.cpu_batch_size
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        per_scene = self.scene_bytes(prompt_tokens)
        fits = int(free * GPU_MEMORY_SHARE // per_scene)
        cap = knee(self.name, self.options.max_batch)
        log.info("%s: %.1f GiB free, about %.2f GiB per scene -> %d scenes fit; cap %d", self.name,
                 free / 2**30, per_scene / 2**30, fits, cap)
        batch = max(1, min(cap, fits))
        static = getattr(self, "_static", None)
        return whole_graph_buckets(batch) if static is not None and static.graphs else batch

    def scene_bytes(self, prompt_tokens: int) -> int:
        """Estimated GPU bytes one scene adds to a batch: KV cache plus prefill activations.
        The static decoder keeps a scene's prompt once for all its beams, and its prefill
        writes into its buffers; where it cannot (a forward that keeps its own cache), the
        prompt's cache is counted twice (measured at batch 64 on the H200 with the copy: 109
        GiB peak against 75 with ``generate``)."""
        static = getattr(self, "_static", None)
        copy = static is not None and not static.in_place
        return scene_bytes(self.model.config.get_text_config(), self.torch_dtype().itemsize,
                           prompt_tokens, self.options.max_new_tokens, self.num_beams, copy,
                           shared_prompt=static is not None)
