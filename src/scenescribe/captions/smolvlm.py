"""SmolVLM2 (500M Video-Instruct): Idefics3-style image splitting, small enough for CPU.

Each frame is passed as an image; the processor splits it into tiles plus a global view and
writes the tile grid (``<row_i_col_j>``) into the prompt. Its processor needs ``num2words``.
"""

from __future__ import annotations

from typing import Any

from scenescribe.captions.hf_base import TransformersCaptioner

# Published config.json of HuggingFaceTB/SmolVLM2-500M-Video-Instruct: SmolLM2-360M text model,
# SigLIP base/16 at 512 px, pixel shuffle by 4 (64 tokens per tile).
TEXT_500M = {"model_type": "llama", "hidden_size": 960, "intermediate_size": 2560,
             "num_hidden_layers": 32, "num_attention_heads": 15, "num_key_value_heads": 5,
             "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
             "vocab_size": 49280, "pad_token_id": 2, "bos_token_id": 1, "eos_token_id": 49279,
             "tie_word_embeddings": False}
VISION_500M = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "num_attention_heads": 12, "image_size": 512, "patch_size": 16}
IMAGE_TOKEN_ID = 49190
GRID = 6  # <row_1_col_1> .. <row_6_col_6>
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def special_ids(vocab_size: int, image_id: int) -> dict[str, int]:
    """Published layout: text specials first, the image tokens around ``image_id``, EOU last."""
    ids = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    grid = [f"<row_{r}_col_{c}>" for r in range(1, GRID + 1) for c in range(1, GRID + 1)]
    first = image_id - 2 - len(grid)
    ids["<global-img>"] = first
    ids.update({name: first + 1 + i for i, name in enumerate(grid)})
    ids["<fake_token_around_image>"] = image_id - 1
    ids["<image>"] = image_id
    ids["<end_of_utterance>"] = vocab_size - 1
    return ids


class SmolVLMCaptioner(TransformersCaptioner):
    """SmolVLM2: frames as images, tiled by the processor."""

    model_class_name = "SmolVLMForConditionalGeneration"
    end_tokens = ("<end_of_utterance>",)

    def image_tokens(self, sizes: list[tuple[int, int]]) -> int:
        """Tiles (plus the global view) times tokens per tile, with their marker tokens."""
        image_processor = self.processor.image_processor
        per_tile = self.processor.image_seq_len + 2
        total = 0
        for height, width in sizes:
            tiles, _, _ = image_processor.get_number_of_image_patches(height, width)
            total += max(tiles, 1) * per_tile
        return total

    @classmethod
    def published_config(cls, name: str) -> Any:
        from transformers import SmolVLMConfig

        return SmolVLMConfig(text_config=dict(TEXT_500M), vision_config=dict(VISION_500M),
                             image_token_id=IMAGE_TOKEN_ID, scale_factor=4,
                             tie_word_embeddings=False)

    @classmethod
    def offline_processor(cls, name: str, config: Any) -> Any:
        from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

        from scenescribe.captions.offline import code_tokenizer

        text = config.get_text_config()
        ids = special_ids(text.vocab_size, config.image_token_id)
        tokenizer = code_tokenizer(
            text.vocab_size, ids, bos="<|im_start|>", eos="<end_of_utterance>",
            pad="<|im_end|>", unk="<|endoftext|>",
            named={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                   "global_image_token": "<global-img>",
                   "end_of_utterance_token": "<end_of_utterance>"})
        side = config.vision_config.image_size
        tile = {"longest_edge": side}
        half = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
        image_processor = SmolVLMImageProcessor(
            do_image_splitting=True, max_image_size=tile, size={"longest_edge": 4 * side}, **half)
        video_processor = SmolVLMVideoProcessor(
            max_image_size=tile, size=tile, **half,
            video_sampling={"fps": 1, "max_frames": 64, "video_size": tile})
        seq_len = (side // config.vision_config.patch_size) ** 2 // config.scale_factor ** 2
        return SmolVLMProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=video_processor, image_seq_len=seq_len,
                                chat_template=CHAT_TEMPLATE)
