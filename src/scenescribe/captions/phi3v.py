"""Phi-3.5-Vision captioner on the native transformers build (KV cache on, scenes batched).

The reference pipeline ran ``microsoft/Phi-3.5-vision-instruct``'s hub code one scene at a time
with ``use_cache=False`` (its cache fails under transformers 5). Here the network is rebuilt on
transformers' Phi-3 and CLIP classes (``phi3v_model``), loaded from the official files, and scenes
go through the shared batched backend (``TransformersCaptioner``) with the standard cache.

A scene's frames become ``<|image_1|>``, ``<|image_2|>`` ... in the official chat format, each
frame cut into at most ``num_crops=4`` crops plus a global view (the official advice for several
frames); greedy decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.hf_base import TransformersCaptioner

NUM_CROPS = 4
# Tokens that end an answer. The official generation config lists <|end|>, <|assistant|> and
# <|endoftext|>; the tokenizer's own eos is only <|endoftext|>.
END_TOKENS = ("<|end|>", "<|assistant|>", "<|endoftext|>")


class Phi3VisionCaptioner(TransformersCaptioner):
    """``phi-3.5-vision``: one caption per scene from its frames."""

    num_crops: ClassVar[int] = NUM_CROPS
    end_tokens = END_TOKENS

    @classmethod
    def transformers_class(cls) -> Any:
        from scenescribe.captions.phi3v_model import Phi3VForCausalLM

        return Phi3VForCausalLM

    def _from_pretrained(self, dtype: Any) -> Any:
        """Official files -> native model and processor; no remote code runs."""
        from transformers import AutoTokenizer

        from scenescribe.captions.phi3v_model import Phi3VConfig, Phi3VForCausalLM
        from scenescribe.captions.phi3v_processing import Phi3VImageProcessor, Phi3VProcessor

        folder = Path(self.weights())
        config = Phi3VConfig.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder, config=config)
        images = Phi3VImageProcessor.from_pretrained(folder, num_crops=self.num_crops)
        self.processor = Phi3VProcessor(tokenizer, images, pad_token_id=config.pad_token_id)
        kwargs: dict[str, Any] = {"config": config, "dtype": dtype,
                                  "key_mapping": embedding_key_mapping(folder)}
        if self.device.startswith("cuda"):  # a device map needs accelerate; CPU does without
            kwargs["device_map"] = self.device
        if (attention := self.attention()) is not None:
            kwargs["attn_implementation"] = attention
        if self.options.quantization == "nf4":
            from transformers import BitsAndBytesConfig

            # The projector and the head stay in 16 bits; the vision and text towers go 4-bit.
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                llm_int8_skip_modules=["lm_head", "img_projection"])
            kwargs["device_map"] = {"": self.device}
        model = Phi3VForCausalLM.from_pretrained(folder, **kwargs)
        return model if "device_map" in kwargs else model.to(self.device)

    def prompt(self, request: CaptionRequest, n_images: int) -> str:
        from scenescribe.captions.phi3v_processing import chat_prompt

        return chat_prompt(self.instruction(request), n_images)

    def encode(self, images: list[list[Any]], prompts: list[str]) -> Any:
        return self.processor(prompts, images)

    def image_tokens(self, sizes: list[tuple[int, int]]) -> int:
        from scenescribe.captions.phi3v_processing import hd_size, num_image_tokens

        total = 0
        for height, width in sizes:
            padded_w, padded_h = hd_size(width, height, self.processor.image_processor.num_crops)
            total += num_image_tokens(padded_h, padded_w)
        return total


def embedding_key_mapping(folder: Path) -> dict[str, str] | None:
    """Read the token embedding from ``vision_embed_tokens.wte`` when only that copy is stored.

    The official model shares one embedding between ``model.embed_tokens`` and the image module,
    so a checkpoint may hold it under either name; when both are stored the copy is ignored.
    """
    import json

    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = set(json.loads(index.read_text()).get("weight_map", {}))
    else:
        from safetensors import safe_open

        names = set()
        for shard in folder.glob("*.safetensors"):
            with safe_open(str(shard), "pt") as handle:
                names.update(handle.keys())
    if "model.embed_tokens.weight" in names or "model.vision_embed_tokens.wte.weight" not in names:
        return None
    return {r"^model\.vision_embed_tokens\.wte\.": "model.embed_tokens."}
