"""The shared transformers backend: load, batch scenes, generate greedily, decode, unload.

Subclasses name the model class and say how a scene becomes a prompt and images; everything else
lives here. Batching across scenes is the speed lever: prompts are left-padded (decoder-only
language models continue from the right edge), scenes are sorted by prompt length so a batch holds
similar lengths (little padding), the batch size comes from free GPU memory, and an out-of-memory
error halves the batch and retries, recording an error only for a scene that fails alone.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from scenescribe.captions.base import DEFAULT_PROMPT, Captioner, CaptionRequest
from scenescribe.errors import BackendUnavailableError, ConfigError, InputError
from scenescribe.progress import Progress
from scenescribe.records import Caption

log = logging.getLogger("scenescribe.captions")

DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")
GPU_MEMORY_SHARE = 0.85  # of the free memory a batch may plan to use; the rest absorbs fragmentation


class TransformersCaptioner(Captioner):
    """A transformers vision-language model captioning scenes in batches.

    Subclasses set ``model_class_name`` and may override ``images``, ``messages``/``prompt``,
    ``generation_kwargs``; for random-weight benchmarks and tiny tests they provide
    ``published_config`` and ``offline_processor``.
    """

    model_class_name: ClassVar[str] = ""
    num_beams: ClassVar[int] = 1
    min_new_tokens_floor: ClassVar[int] = 0  # a family's own minimum caption length
    cpu_batch_size: ClassVar[int] = 4
    max_batch_size: ClassVar[int] = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processor: Any = None
        self._batch_cap: int | None = None  # lowered after an out-of-memory error

    # ---- what subclasses describe -------------------------------------------------------------

    @classmethod
    def transformers_class(cls) -> Any:
        import transformers

        return getattr(transformers, cls.model_class_name)

    @classmethod
    def published_config(cls, name: str) -> Any:
        """Full-size config of registry model ``name`` built from published hyperparameters."""
        raise NotImplementedError(f"{cls.__name__} has no built-in config for random weights")

    @classmethod
    def offline_processor(cls, name: str, config: Any) -> Any:
        """A processor for ``config`` built in code (tokenizer, image processor, chat format)."""
        raise NotImplementedError(f"{cls.__name__} has no offline processor")

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

    def generation_kwargs(self) -> dict[str, Any]:
        """Extra generation settings of this model family (e.g. beams)."""
        return {}

    def encode(self, images: list[list[Any]], prompts: list[str]) -> Any:
        """Processor outputs for a batch (``images[i]`` are scene i's images)."""
        return self.processor(images=images, text=prompts, padding=True, return_tensors="pt")

    # ---- load / unload -------------------------------------------------------------------------

    def _load(self) -> Any:
        self._check_options()
        dtype = self.torch_dtype()
        if self.options.random_weights:
            from scenescribe.captions.offline import random_model

            config = self.published_config(self.name)
            config._attn_implementation = self.attention()
            self.processor = self.offline_processor(self.name, config)
            model = random_model(self.transformers_class(), config, self.device, dtype)
        else:
            model = self._from_pretrained(dtype)
        self.processor.tokenizer.padding_side = "left"
        log.info("%s loaded on %s (%s, attention %s)", self.name, self.device, dtype,
                 model.config._attn_implementation)
        return model.eval()

    def _from_pretrained(self, dtype: Any) -> Any:
        from transformers import AutoProcessor

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
        self.processor = AutoProcessor.from_pretrained(path)
        model = self.transformers_class().from_pretrained(path, **kwargs)
        return model if placed else model.to(self.device)

    def _check_options(self) -> None:
        o = self.options
        if o.dtype not in DTYPES:
            raise ConfigError(f"captions.dtype {o.dtype!r}: choose from {', '.join(DTYPES)}")
        if o.attention not in ATTENTION:
            raise ConfigError(f"captions.attention {o.attention!r}: choose from "
                              f"{', '.join(ATTENTION)}")
        if o.cache not in ("dynamic", "static"):
            raise ConfigError(f"captions.cache {o.cache!r}: choose dynamic or static")
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
        # Longest first: the batch most likely to run out of memory runs first, and similar
        # lengths share a batch so padding stays small.
        ordered = sorted(((self.prompt_length(r), r) for r in requests),
                         key=lambda x: (-x[0], x[1].index))
        size = min(self.batch_size(ordered[0][0]), self._batch_cap or len(requests))
        log.info("%s: %d scenes, batch size %d", self.name, len(requests), size)
        task = progress.task(f"captions [{self.name}]", total=len(requests))
        try:
            for index, caption in self._run([r for _, r in ordered], size):
                task.advance()
                yield index, caption
        finally:
            task.close()

    def _run(self, requests: list[CaptionRequest], size: int) -> Iterator[tuple[int, Caption]]:
        import torch

        pending = deque(_chunks(requests, size))
        while pending:
            batch = pending.popleft()
            try:
                results = self.generate(batch)
            except torch.cuda.OutOfMemoryError as exc:
                results, error = None, str(exc).split("\n")[0][:200]
            if results is not None:
                yield from results
                continue
            self._free_memory()  # outside the except block: the traceback no longer pins tensors
            if len(batch) == 1:
                log.warning("%s: scene %d out of memory alone: %s", self.name, batch[0].index,
                            error)
                yield batch[0].index, Caption("", 0, error=f"out of memory at batch size 1: "
                                                          f"{error}")
                continue
            half = (len(batch) + 1) // 2
            self._batch_cap = half
            log.warning("%s: out of memory at batch size %d; retrying at %d", self.name,
                        len(batch), half)
            rest = [r for b in pending for r in b]
            pending = deque([*_chunks(batch, half), *_chunks(rest, half)])

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def generate(self, batch: Sequence[CaptionRequest]) -> list[tuple[int, Caption]]:
        """Caption one batch with one ``generate`` call; only the new tokens are decoded."""
        images = [self.images(r) for r in batch]
        prompts = [self.prompt(r, len(imgs)) for r, imgs in zip(batch, images, strict=True)]
        inputs = self._to_device(self.encode(images, prompts))
        output = self.model.generate(**inputs, generation_config=self.generation_config())
        new = output[:, inputs["input_ids"].shape[1]:].tolist()
        stops = self._stop_ids()
        results = []
        for request, row in zip(batch, new, strict=True):
            count = next((i for i, t in enumerate(row) if t in stops), len(row))
            text = self.processor.tokenizer.decode(row[:count], skip_special_tokens=True)
            results.append((request.index, Caption(text.strip(), count)))
        return results

    def _to_device(self, inputs: Any) -> dict[str, Any]:
        dtype = self.torch_dtype()
        moved = {}
        for key, value in inputs.items():
            if hasattr(value, "is_floating_point"):  # pixels go over in the model's dtype
                value = value.to(self.device, dtype=dtype if value.is_floating_point() else None)
            moved[key] = value
        return moved

    def generation_config(self) -> Any:
        """Greedy (or the family's beam search) with the model's KV cache, as the reference."""
        from transformers import GenerationConfig

        o = self.options
        tokenizer = self.processor.tokenizer
        eos = self._eos_ids()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        # Random weights: a fixed output length, the worst case of a real run.
        min_new = o.max_new_tokens if o.random_weights else max(o.min_new_tokens,
                                                                  self.min_new_tokens_floor)
        config = GenerationConfig(
            max_new_tokens=o.max_new_tokens, min_new_tokens=min(min_new, o.max_new_tokens),
            do_sample=False, num_beams=self.num_beams, use_cache=o.use_cache,
            eos_token_id=eos, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id)
        if o.use_cache and o.cache == "static" and self.device.startswith("cuda"):
            # A preallocated cache lets transformers compile the decode step: far fewer kernel
            # launches per token, which is where batched decoding spends its time.
            config.cache_implementation = "static"
        config.update(**self.generation_kwargs())
        return config

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not ids:
            raise ConfigError(f"{self.name}: the tokenizer has no end-of-sequence token")
        return ids

    def _stop_ids(self) -> set[int]:
        return set(self._eos_ids())

    # ---- batch planning ------------------------------------------------------------------------

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
        """Scenes per ``generate`` call: the option, else from free GPU memory, else small on CPU."""
        if self.options.batch_size > 0:
            return self.options.batch_size
        if not self.device.startswith("cuda"):
            return self.cpu_batch_size
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        per_scene = self.scene_bytes(prompt_tokens)
        fits = int(free * GPU_MEMORY_SHARE // per_scene)
        log.info("%s: %.1f GiB free, about %.2f GiB per scene -> %d scenes per batch", self.name,
                 free / 2**30, per_scene / 2**30, fits)
        return max(1, min(self.max_batch_size, fits))

    def scene_bytes(self, prompt_tokens: int) -> int:
        """Estimated GPU bytes one scene adds to a batch: KV cache plus prefill activations."""
        text = self.model.config.get_text_config()
        width = self.torch_dtype().itemsize
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        tokens = prompt_tokens + self.options.max_new_tokens
        kv = 2 * text.num_hidden_layers * kv_heads * head_dim * width * tokens * self.num_beams
        # One layer's prefill activations live at a time: q/k/v/out projections, the MLP's three
        # intermediate tensors, and a few copies of the embedded prompt.
        act = prompt_tokens * (8 * text.hidden_size + 3 * text.intermediate_size) * width
        logits = 4 * text.vocab_size * self.num_beams * 2
        return kv + act + logits


def _chunks(items: Sequence[CaptionRequest], size: int) -> list[list[CaptionRequest]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def open_rgb(path: str) -> Any:
    """A frame as an RGB PIL image; a missing or broken file is an ``InputError`` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read frame image: {exc}") from exc


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` read from the image header only."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read frame image: {exc}") from exc
    return height, width
