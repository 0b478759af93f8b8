"""Qwen2.5-VL 7B Instruct: native-resolution images, one ``<|image_pad|>`` run per frame.

Left padding is safe with its 3-D (M-RoPE) positions: ``get_rope_index`` numbers only the tokens
the attention mask keeps, and the per-sample offset it returns (``rope_deltas``) carries each
row's own position into the decoding steps.
"""

from __future__ import annotations

from typing import Any

from scenescribe.captions.hf_base import TransformersCaptioner

# Published config.json of Qwen/Qwen2.5-VL-7B-Instruct.
TEXT_7B = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4,
           "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "vocab_size": 152064,
           "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
           "rope_theta": 1e6, "bos_token_id": 151643, "eos_token_id": 151645,
           "tie_word_embeddings": False}
VISION_7B = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
             "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
             "temporal_patch_size": 2, "window_size": 112, "tokens_per_second": 2,
             "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"}
# Special tokens after the 151,643 learned ones, at their published ids.
SPECIAL_NAMES = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                 "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                 "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                 "<|image_pad|>", "<|video_pad|>")
FIRST_SPECIAL = 151643
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def special_ids(first: int) -> dict[str, int]:
    return {name: first + i for i, name in enumerate(SPECIAL_NAMES)}


class Qwen25VLCaptioner(TransformersCaptioner):
    """Qwen2.5-VL: each frame is one image at (bounded) native resolution."""

    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    end_tokens = ("<|im_end|>",)

    @classmethod
    def published_config(cls, name: str) -> Any:
        from transformers import Qwen2_5_VLConfig

        ids = special_ids(FIRST_SPECIAL)
        return Qwen2_5_VLConfig(
            text_config=dict(TEXT_7B), vision_config=dict(VISION_7B),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)

    @classmethod
    def offline_processor(cls, name: str, config: Any) -> Any:
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        from scenescribe.captions.offline import code_tokenizer

        text = config.get_text_config()
        ids = special_ids(config.vision_start_token_id - SPECIAL_NAMES.index("<|vision_start|>"))
        tokenizer = code_tokenizer(text.vocab_size, ids, eos="<|im_end|>",
                                   pad="<|endoftext|>")
        vision = config.vision_config
        factor = vision.patch_size * vision.spatial_merge_size
        grid = {"patch_size": vision.patch_size, "temporal_patch_size": vision.temporal_patch_size,
                "merge_size": vision.spatial_merge_size}
        image_processor = Qwen2VLImageProcessor(
            size={"shortest_edge": 4 * factor**2, "longest_edge": 16384 * factor**2}, **grid)
        video_processor = Qwen2VLVideoProcessor(  # unused for frames; the processor requires one
            size={"shortest_edge": 128 * factor**2, "longest_edge": 768 * factor**2}, **grid)
        return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   video_processor=video_processor, chat_template=CHAT_TEMPLATE)
