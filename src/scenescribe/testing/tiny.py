"""Tiny versions of every captioner architecture, for tests and CPU pipeline runs.

Each is the real transformers architecture with one or two layers, hidden sizes of 32-64, a small
vision tower and image size, a tokenizer built in code holding the model's special tokens, and
the matching image processor, with random weights; ``build_tiny`` saves it with
``save_pretrained`` into ``out_dir/<checkpoint name>`` so that the registry's model-directory
lookup finds it and the captioner loads it through the same ``from_pretrained`` path as real
weights. The weights are random, so the captions are gibberish: the tests check mechanics
(batching, padding, decoding), never wording.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scenescribe import registry
from scenescribe.testing.stand_ins import offline_processor

_TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
              "initializer_range": 0.2}
# A wide initialisation makes the tiny random models' next-token choices decisive rather than
# near-ties, so identical inputs must give identical tokens whatever the batch.
TINY_VOCAB = 512


def _llava_next(name: str) -> Any:
    from transformers import LlavaNextConfig

    from scenescribe.testing.stand_ins import LLAVA_TEXT

    text = {"model_type": LLAVA_TEXT[name]["model_type"], **_TINY_TEXT,
            "vocab_size": TINY_VOCAB}
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32,
              "patch_size": 8, "projection_dim": 32, "initializer_range": 0.2}
    return LlavaNextConfig(text_config=text, vision_config=vision, image_token_index=500,
                           image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]],
                           vision_feature_select_strategy="default", vision_feature_layer=-2,
                           tie_word_embeddings=False)


def _instructblip(name: str) -> Any:
    from transformers import InstructBlipConfig

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
              "initializer_range": 0.2}
    qformer = {"vocab_size": TINY_VOCAB, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 2, "num_attention_heads": 2, "cross_attention_frequency": 1,
               "encoder_hidden_size": 32, "max_position_embeddings": 128,
               "initializer_range": 0.2}
    text = {"model_type": "llama", **_TINY_TEXT, "vocab_size": TINY_VOCAB, "bos_token_id": 1,
            "eos_token_id": 2, "pad_token_id": TINY_VOCAB - 2}
    return InstructBlipConfig(vision_config=vision, qformer_config=qformer, text_config=text,
                              num_query_tokens=4, image_token_index=TINY_VOCAB - 1,
                              initializer_range=0.2)


def _qwen2_5_vl(name: str) -> Any:
    from transformers import Qwen2_5_VLConfig

    from scenescribe.testing.stand_ins import QWEN_SPECIALS, qwen_special_ids

    ids = qwen_special_ids(TINY_VOCAB - len(QWEN_SPECIALS))
    text = {**_TINY_TEXT, "vocab_size": TINY_VOCAB, "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}  # head_dim 16 / 2
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
              "out_hidden_size": 64, "patch_size": 4, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "window_size": 16, "fullatt_block_indexes": [1],
              "initializer_range": 0.2}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                            image_token_id=ids["<|image_pad|>"],
                            video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"],
                            vision_end_token_id=ids["<|vision_end|>"])


def _smolvlm(name: str) -> Any:
    from transformers import SmolVLMConfig

    image_id = TINY_VOCAB - 7
    text = {"model_type": "llama", **_TINY_TEXT, "vocab_size": TINY_VOCAB, "pad_token_id": 2,
            "bos_token_id": 1, "eos_token_id": TINY_VOCAB - 1}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
              "initializer_range": 0.2}
    return SmolVLMConfig(text_config=text, vision_config=vision, image_token_id=image_id,
                         scale_factor=2)


TINY_CONFIGS: dict[str, Callable[[str], Any]] = {
    "llava-v1.6-vicuna-7b": _llava_next,
    "llava-v1.6-mistral-7b": _llava_next,
    "instructblip-vicuna-7b": _instructblip,
    "qwen2.5-vl-7b": _qwen2_5_vl,
    "smolvlm2": _smolvlm,
}


def tiny_names() -> list[str]:
    """Registry names that ``build_tiny`` can build."""
    return sorted(TINY_CONFIGS)


def build_tiny(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny ``name`` and save model and processor in ``out_dir/<checkpoint name>``.

    Returns that folder; pass ``out_dir`` as the captioner's ``model_dir`` (or the folder as
    ``CaptionOptions.weights``). Rebuilding with the same seed gives the same weights.
    """
    import torch

    if name not in TINY_CONFIGS:
        raise ValueError(f"no tiny build for {name!r}; known: {', '.join(tiny_names())}")
    entry = registry.get_entry(name, "captioner")
    cls = entry.load_class()
    config = TINY_CONFIGS[name](name)
    torch.manual_seed(seed)
    model = cls.transformers_class()._from_config(config, dtype=torch.float32)
    processor = offline_processor(name, config)
    assert entry.checkpoint is not None
    folder = Path(out_dir) / entry.checkpoint.split("/")[-1]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
