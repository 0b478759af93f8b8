"""A tiny Phi-3.5-Vision checkpoint, laid out like the official one, for tests.

``build_tiny_phi3v`` writes what ``microsoft/Phi-3.5-vision-instruct`` ships, only small:
``config.json`` in the official ``phi3_v`` format (``rope_scaling`` of type ``su``,
``img_processor``, ``embd_layer``) plus a ``vision_config`` for the tiny CLIP, safetensors
with the official weight names, a tokenizer built in code that knows the chat tokens
(``<|user|>``, ``<|end|>``, ``<|assistant|>``, ``<|image_N|>`` ...), the preprocessor config
and a generation config. Weights are random (seeded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
CHAT_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>",
               *(f"<|image_{i}|>" for i in range(1, 5)))
TINY_VOCAB = 320  # > tokenizer size, like the official 32064 > 32011 (padding rows)


def build_tiny_tokenizer() -> Any:
    """Byte-level tokenizer (every byte a token, no merges) that prepends BOS like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *sorted(alphabet)])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(CHAT_TOKENS))
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>",
                                   eos_token="<|endoftext|>", unk_token="<unk>",
                                   pad_token="<|endoftext|>")


def tiny_config_dict(tokenizer: Any) -> dict[str, Any]:
    """The official config.json keys with tiny sizes (and a tiny ``vision_config``)."""
    ids = tokenizer.convert_tokens_to_ids
    head_half = 64 // 4 // 2
    return {
        "architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v",
        "attention_dropout": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
        "bos_token_id": ids("<s>"), "eos_token_id": ids("</s>"),
        "pad_token_id": ids("<|endoftext|>"),
        "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                       "projection_cls": "mlp", "use_hd_transform": True,
                       "with_learnable_separator": True},
        "img_processor": {"image_dim_out": 32, "model_name": "openai/clip-vit-large-patch14-336",
                          "name": "clip_vision_model", "num_img_tokens": 144},
        "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128,
        "initializer_range": 0.2, "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 4, "rms_norm_eps": 1e-5,
        "rope_scaling": {"type": "su",
                         "short_factor": [1.0 + 0.05 * i for i in range(head_half)],
                         "long_factor": [2.0 + 0.5 * i for i in range(head_half)]},
        "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": False,
        "torch_dtype": "float32", "use_cache": True, "vocab_size": TINY_VOCAB,
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                          "num_hidden_layers": 3, "image_size": 336, "patch_size": 14,
                          "projection_dim": 32, "hidden_act": "quick_gelu",
                          "layer_norm_eps": 1e-5, "model_type": "clip_vision_model"},
    }


def build_tiny_phi3v(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random-weights Phi-3.5-Vision checkpoint into ``out_dir``; return it."""
    import torch

    from scenescribe.captions.phi3v_model import Phi3VConfig, Phi3VForCausalLM
    from scenescribe.captions.phi3v_processing import Phi3VImageProcessor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    config_dict = tiny_config_dict(tokenizer)
    torch.manual_seed(seed)
    model = Phi3VForCausalLM(Phi3VConfig(**config_dict))
    model.save_pretrained(out_dir)
    # Overwrite the library's config.json with the official file's layout.
    (out_dir / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    tokenizer.save_pretrained(out_dir)
    Phi3VImageProcessor(num_crops=4).save_pretrained(out_dir)
    ids = tokenizer.convert_tokens_to_ids
    generation = {"bos_token_id": ids("<s>"), "pad_token_id": ids("<|endoftext|>"),
                  "eos_token_id": [ids("<|end|>"), ids("<|assistant|>"), ids("<|endoftext|>")]}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return out_dir
