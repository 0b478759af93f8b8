"""The shared transformers backend: load, batch scenes, generate greedily, decode, unload.

Subclasses name the model class and say how a scene becomes a prompt and images; everything else
lives here. Batching across scenes is the speed lever: prompts are left-padded (decoder-only
language models continue from the right edge), scenes are sorted by prompt length so a batch holds
similar lengths (little padding), the batch size comes from free GPU memory capped at the
family's measured throughput knee (``batching``), and an out-of-memory error halves the batch and
retries, recording an error only for a scene that fails alone. Batch k+1 is preprocessed on a CPU
thread while batch k generates (``engine``); on CUDA one short generate at the first batch's
shape runs first, so kernel selection, allocator growth and the decode step's CUDA graph capture
are not paid inside the first batch. Greedy families decode in ``static_decode`` (``decoding``
chooses); beam search in transformers' ``generate`` unless the static decoder is asked for.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from scenescribe.attention import avoid_cudnn_attention, pack_grouped_decoding
from scenescribe.captions.base import DEFAULT_PROMPT, Captioner, CaptionRequest
from scenescribe.captions.batching import BatchTuner
from scenescribe.captions.decoding import Decoding
from scenescribe.captions.engine import run_batches
from scenescribe.captions.frames import image_size, open_rgb
from scenescribe.captions.planning import BatchPlanner
from scenescribe.captions.published import (
    check_prompt_ids,
    reset_generation_configs,
)
from scenescribe.captions.static_decode import StaticCaptionDecoder
from scenescribe.errors import BackendUnavailableError, ConfigError
from scenescribe.gpu_share import launching, stream_for_loaded_model
from scenescribe.knobs import env_count
from scenescribe.progress import Progress
from scenescribe.records import Caption

log = logging.getLogger("scenescribe.captions")

__all__ = ["TransformersCaptioner", "image_size", "open_rgb"]

DTYPES = ("auto", "bfloat16", "float16", "float32")
DECODERS = ("auto", "graph", "static", "generate")
ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")


class TransformersCaptioner(Decoding, BatchPlanner, Captioner):
    """A transformers vision-language model captioning scenes in batches.

    Subclasses set ``model_class_name`` and may override ``images``, ``messages``/``prompt``,
    ``generation_kwargs``; ``--random-weights`` builds them from ``scenescribe.testing``.
    """

    model_class_name: ClassVar[str] = ""
    cpu_batch_size: ClassVar[int] = 4
    # Preprocess batch k+1 on a thread while batch k generates; None: on CUDA only (on a CPU the
    # thread would take cores from generation itself).
    prefetch: ClassVar[bool | None] = None
    warm_up_tokens: ClassVar[int] = 4  # new tokens of the warm-up generate (CUDA; 0: none)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processor: Any = None
        self._batch_cap: int | None = None  # lowered after an out-of-memory error
        self._checkpoint_eos: list[int] = []  # the checkpoint's generation_config.json eos ids
        self._warm_size = 0  # the largest batch a warm-up generate has run at
        self._packed: list[str] = []  # models switched to packed grouped-query decoding
        self._static: StaticCaptionDecoder | None = None  # see ``decoder``
        self._stream: Any = None  # the caption stage's own CUDA stream (``_on_own_stream``)
        # Fast tokenizers reconfigure themselves (padding) when encoding: never while another
        # thread decodes with them ("Already borrowed"), so encode and decode share a lock.
        self._tokenizer_lock = threading.Lock()
        self.tuner: BatchTuner | None = None  # the last caption call's (its choice is logged)
        self.engine_stats: dict[str, float] = {}  # the last caption call's (``run_batches``)

    # ---- what subclasses describe -------------------------------------------------------------

    @classmethod
    def transformers_class(cls) -> Any:
        import transformers

        return getattr(transformers, cls.model_class_name)

    def instruction(self, request: CaptionRequest) -> str:
        """The caption instruction, after the scene's grounding facts when there are any."""
        text = self.options.prompt or DEFAULT_PROMPT
        return f"{request.context.strip()}\n\n{text}" if request.context.strip() else text

    def images(self, request: CaptionRequest) -> list[Any]:
        """The scene's frames as RGB images (one image per frame by default)."""
        return [open_rgb(path) for path in request.frames]

    def messages(self, request: CaptionRequest, n_images: int) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": self.instruction(request)})
        return [{"role": "user", "content": content}]

    def prompt(self, request: CaptionRequest, n_images: int) -> str:
        """The prompt text with one image placeholder per image, in the model's chat format."""
        return self.processor.apply_chat_template(self.messages(request, n_images),
                                                  add_generation_prompt=True, tokenize=False)

    def encode(self, images: list[list[Any]], prompts: list[str]) -> Any:
        """Processor outputs for a batch (``images[i]`` are scene i's images)."""
        return self.processor(images=images, text=prompts, padding=True, return_tensors="pt")

    # ---- load / unload -------------------------------------------------------------------------

    def _load(self) -> Any:
        self._check_options()
        dtype = self.torch_dtype()
        avoid_cudnn_attention(self.device)
        if self.options.random_weights:  # benchmarks: the architecture, no checkpoint
            from scenescribe.testing import stand_ins

            config = stand_ins.published_config(self.name)
            config._attn_implementation = self.attention()
            self.processor = stand_ins.offline_processor(self.name, config)
            model = stand_ins.random_model(self.transformers_class(), config, self.device, dtype)
        else:
            model = self._from_pretrained(dtype)
            check_prompt_ids(self.name, self.weights(), self.processor.tokenizer,
                             self.prompt(CaptionRequest(0, ("a.jpg", "b.jpg")), 2))
        # Only the end tokens are read from the checkpoint's generation config: every decoding
        # setting is ours (``generation_config``), none is filled in from the file.
        self._checkpoint_eos = reset_generation_configs(model)
        self._packed = pack_grouped_decoding(model)
        self._static = self._static_decoder(model)
        if self.device.startswith("cuda") and env_count("SCENESCRIBE_CAPTION_STREAM") != 0:
            self._stream = stream_for_loaded_model(self.device)
        self.processor.tokenizer.padding_side = "left"
        log.info("%s loaded on %s (%s, attention %s)", self.name, self.device, dtype,
                 model.config._attn_implementation)
        return model.eval()

    def _from_pretrained(self, dtype: Any) -> Any:
        path = self.weights()
        kwargs: dict[str, Any] = {"dtype": dtype}
        # Straight onto the device when accelerate can place it; otherwise load, then move.
        placed = importlib.util.find_spec("accelerate") is not None
        if placed:
            kwargs["device_map"] = self.device
        if (attention := self.attention()) is not None:
            kwargs["attn_implementation"] = attention
        if self.options.quantization == "nf4":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
            kwargs["device_map"] = {"": self.device}
            placed = True
        self.processor = self.load_processor(path)
        model = self.transformers_class().from_pretrained(path, **kwargs)
        return model if placed else model.to(self.device)

    def load_processor(self, path: Any) -> Any:
        """The checkpoint's processor (the class its ``processor_config.json`` names)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)

    def _check_options(self) -> None:
        o = self.options
        if o.dtype not in DTYPES:
            raise ConfigError(f"captions.dtype {o.dtype!r}: choose from {', '.join(DTYPES)}")
        if o.attention not in ATTENTION:
            raise ConfigError(f"captions.attention {o.attention!r}: choose from "
                              f"{', '.join(ATTENTION)}")
        if o.cache not in ("dynamic", "static"):
            raise ConfigError(f"captions.cache {o.cache!r}: choose dynamic or static")
        if o.decoder not in DECODERS:
            raise ConfigError(f"captions.decoder {o.decoder!r}: choose from {', '.join(DECODERS)}")
        if o.quantization not in (None, "nf4"):
            raise ConfigError(f"captions.quantization {o.quantization!r}: use nf4 or leave unset")
        if o.quantization == "nf4":
            if not self.device.startswith("cuda"):
                raise ConfigError(f"{self.name}: 4-bit NF4 quantization (bitsandbytes) needs a "
                                  f"CUDA device; this run uses {self.device}")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise BackendUnavailableError(self.name, "bitsandbytes", "quant")
            if o.random_weights:  # bitsandbytes quantizes while loading a checkpoint only
                raise ConfigError(f"{self.name}: random weights are built in 16 bits; "
                                  f"leave quantization unset")
        if o.max_new_tokens < 1 or o.min_new_tokens < 0:
            raise ConfigError("captions.max_new_tokens must be >= 1 and min_new_tokens >= 0")

    def torch_dtype(self) -> Any:
        """bf16 (fp16 where bf16 is unsupported) on CUDA, float32 on CPU, unless chosen."""
        import torch

        if self.options.dtype != "auto":
            return getattr(torch, self.options.dtype)
        if self.device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    def attention(self) -> str | None:
        """The attention kernel; ``None`` lets transformers pick (SDPA where supported)."""
        choice = self.options.attention
        if choice != "auto":
            return choice
        if self.device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        return None

    def unload(self) -> None:
        self._static = None
        self._stream = None
        self.processor = None
        self.model = None
        gc.collect()
        super().unload()

    # ---- captioning ----------------------------------------------------------------------------

    def caption(self, requests: Sequence[CaptionRequest],
                progress: Progress) -> Iterator[tuple[int, Caption]]:
        if not requests:
            return
        self.load()
        ordered, size = self._plan(requests)
        self.tuner = BatchTuner.plan(size, len(ordered), self._adaptive(), self.name)
        log.info("%s: %d scenes, batch size %d%s", self.name, len(ordered), size,
                 f" (trying {self.tuner.sizes})" if len(self.tuner.sizes) > 1 else "")
        task = progress.task(f"captions [{self.name}]", total=len(ordered))
        try:
            self.engine_stats = {}
            for index, caption in run_batches(self, ordered, self.tuner, self._prefetching(),
                                              stats=self.engine_stats):
                task.advance()
                yield index, caption
        finally:
            task.close()

    def _plan(self, requests: Sequence[CaptionRequest]) -> tuple[list[CaptionRequest], int]:
        """Requests in batch order and the batch size for the first batch."""
        fitted = [self.fit_positions(r) for r in requests]
        # Longest first: the batch most likely to run out of memory runs first, and similar
        # lengths share a batch so padding stays small.
        ordered = sorted(((self.prompt_length(r), r) for r in fitted),
                         key=lambda x: (-x[0], x[1].index))
        size = min(self.batch_size(ordered[0][0]), self._batch_cap or len(fitted))
        return [r for _, r in ordered], size

    def _adaptive(self) -> bool:
        """The throughput tuner runs for an automatic batch on CUDA, when asked."""
        o = self.options
        return o.adaptive_batch and o.batch_size == 0 and self.device.startswith("cuda")

    def _prefetching(self) -> bool:
        return self.device.startswith("cuda") if self.prefetch is None else self.prefetch

    def warm_up(self, requests: Sequence[CaptionRequest]) -> None:
        """On CUDA: run now the warm-up ``caption`` would run before its first batch of
        ``requests`` (so a benchmark can pay it before its clock starts)."""
        if not requests or not self.device.startswith("cuda"):
            return
        self.load()
        ordered, size = self._plan(requests)
        batch = ordered[:size]
        self.warm(batch, self.prepare(batch))

    def warm(self, batch: Sequence[CaptionRequest], inputs: Any) -> None:
        """On CUDA with ``generate``, when ``batch`` is larger than any warmed before: prefill
        at full batch and a few decode steps, so the first real batch does not pay kernel
        selection and allocator growth (10-25 s on an H200 at batch 64 before the static
        decoder). Out of memory here is left to the real batch."""
        import torch

        tokens = env_count("SCENESCRIBE_CAPTION_WARM_UP")
        if tokens is None:
            # The static decoder's first batch makes its buffers and graphs anyway; a warm-up
            # full prefill before it cost 9.4 s and saved nothing (LLaVA-Mistral on the H200,
            # 128 scenes at batch 64: 0.322 s/scene with it, 0.249 without).
            tokens = 0 if self._static is not None else self.warm_up_tokens
        if not self.device.startswith("cuda") or tokens <= 0 or len(batch) <= self._warm_size:
            return
        try:
            self.short_generate(inputs, tokens)
            torch.cuda.synchronize()
            done = True
        except torch.cuda.OutOfMemoryError:
            done = False
        if done:
            self._warm_size = len(batch)
            log.info("%s: warmed up at batch %d", self.name, len(batch))
        else:  # outside the except block: the traceback no longer pins tensors
            log.info("%s: warm-up at batch %d ran out of memory", self.name, len(batch))
            self.free_memory()  # only then: the cached blocks are what the warm-up is for

    def short_generate(self, inputs: Any, steps: int) -> Any:
        """``generate`` with the real settings (so a static cache gets its real shape, and the
        static decoder its buffers and graph) stopped after ``steps`` new tokens."""
        with self._on_own_stream():
            return self._short_generate(inputs, steps)

    def _short_generate(self, inputs: Any, steps: int) -> Any:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        moved = self._to_device(inputs)
        static = self._decode_static(moved, stop_after=steps)
        if static is not None:
            return static
        stop_at = moved["input_ids"].shape[1] + steps

        class Steps(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), input_ids.shape[1] >= stop_at,
                                  dtype=torch.bool, device=input_ids.device)

        return self.model.generate(**moved, generation_config=self.generation_config(),
                                   stopping_criteria=StoppingCriteriaList([Steps()]))

    def free_memory(self) -> None:
        if self._static is not None:
            self._static.release()
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def prepare(self, batch: Sequence[CaptionRequest]) -> Any:
        """A batch's CPU work: frames read, prompts built, processor outputs (on the CPU)."""
        images = [self.images(r) for r in batch]
        prompts = [self.prompt(r, len(imgs)) for r, imgs in zip(batch, images, strict=True)]
        with self._tokenizer_lock:
            return self.encode(images, prompts)

    def generate(self, batch: Sequence[CaptionRequest]) -> list[tuple[int, Caption]]:
        """Caption one batch with one ``generate`` call; only the new tokens are decoded."""
        return self.generate_prepared(batch, self.prepare(batch))

    def generate_prepared(self, batch: Sequence[CaptionRequest],
                          inputs: Any) -> list[tuple[int, Caption]]:
        """``generate`` on a batch ``prepare`` made."""
        with self._on_own_stream():
            moved = self._to_device(inputs)
            with launching(beside_exclusive=True):  # a batch of seconds: never waits one out
                new = self._decode_static(moved)
                if new is None:
                    output = self.model.generate(**moved,
                                                 generation_config=self.generation_config())
                    new = output[:, moved["input_ids"].shape[1]:].tolist()
        stops = self._stop_ids()
        results = []
        with self._tokenizer_lock:
            for request, row in zip(batch, new, strict=True):
                count = next((i for i, t in enumerate(row) if t in stops), len(row))
                text = self.processor.tokenizer.decode(row[:count], skip_special_tokens=True)
                results.append((request.index, Caption(text.strip(), count)))
        return results

    @contextlib.contextmanager
    def _on_own_stream(self) -> Iterator[None]:
        """Run the block's GPU work on the caption stage's own stream. On the device's default
        stream the tracker's and the sound tagger's read-backs (a copy to the CPU per frame)
        waited behind every queued decode step of the captioner (py-spy on the H200: the
        tracker's first W1 video took 52 s beside the captions, 8 s after them)."""
        if self._stream is None:
            yield
            return
        import torch

        with torch.cuda.stream(self._stream):
            yield

    def _to_device(self, inputs: Any) -> dict[str, Any]:
        dtype = self.torch_dtype()
        moved = {}
        for key, value in inputs.items():
            if hasattr(value, "is_floating_point"):  # pixels go over in the model's dtype
                value = value.to(self.device, dtype=dtype if value.is_floating_point() else None)
            moved[key] = value
        return moved

    def facts(self) -> dict[str, Any]:
        facts = {**super().facts(), "decoding": self.decoding()}
        if self.processor is not None:
            facts["processor"] = type(self.processor).__name__
        if self._packed:
            facts["packed_attention"] = self._packed
        facts["decoder"] = "generate" if self.loaded and self._static is None else self.decoder
        if self._static is not None and self.decoder == "graph" and not self._static.graphs:
            facts["decoder"] = "static (graph capture failed)"
        return facts
