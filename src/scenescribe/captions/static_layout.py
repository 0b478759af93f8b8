"""Which checkpoints the static caption decoder (``static_decode``) can step: the language model
found inside a captioner, and the longest sequence its rotary table serves unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Rotary scalings whose table does not depend on the sequence's length.
FIXED_ROPE = ("default", "linear", "llama3", "yarn")
# Language models whose layers this step reproduces (config.model_type).
LAYOUTS = ("llama", "mistral", "qwen2", "phi3", "phi3_v")


@dataclass(frozen=True, slots=True)
class LanguageModel:
    """The parts of a checkpoint's language model one decoding step reads."""

    body: Any  # the decoder (``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``)
    head: Any  # the output projection to the vocabulary
    heads: int
    kv_heads: int
    head_dim: int
    max_length: int | None  # longest sequence whose rotary table each step would compute alike
    sliding_window: int | None


def language_model(model: Any) -> LanguageModel | None:
    """The checkpoint's decoder if its layers are ones ``static_decode`` steps, else None."""
    body = next((m for m in model.modules() if _is_decoder(m)), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or head is None:
        return None
    config = body.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return LanguageModel(body, head, heads, getattr(config, "num_key_value_heads", None) or heads,
                         head_dim, _table_limit(config), getattr(config, "sliding_window", None))


def _table_limit(config: Any) -> int | None:
    """The longest sequence whose rotary table is the same at every step: LongRoPE and dynamic
    scaling switch tables past the original length (``generate`` would too), the others never
    do (positions past ``max_position_embeddings`` are computed alike by both)."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    kind = "default"
    if isinstance(rope, dict):
        kind = str(rope.get("rope_type") or rope.get("type") or "default")
    if kind in FIXED_ROPE:
        return None
    original = getattr(config, "original_max_position_embeddings", None)
    if original is None and isinstance(rope, dict):
        original = rope.get("original_max_position_embeddings")
    return int(original or config.max_position_embeddings)


def _is_decoder(module: Any) -> bool:
    config = getattr(module, "config", None)
    if getattr(config, "model_type", None) not in LAYOUTS:
        return False
    if not all(hasattr(module, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return False
    attn = getattr(module.layers[0], "self_attn", None) if len(module.layers) else None
    return attn is not None and (hasattr(attn, "qkv_proj") or hasattr(attn, "q_proj"))
