"""Captioner helpers: frames read as RGB or sized from the header, batches, memory per scene."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from scenescribe.errors import InputError

T = TypeVar("T")


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


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def scene_bytes(text: Any, width: int, prompt_tokens: int, new_tokens: int, beams: int,
                prefill_copy: bool = False, shared_prompt: bool = False) -> int:
    """GPU bytes one scene adds to a batch of a language model with config ``text``: a KV cache
    per beam (``shared_prompt``: the prompt's once, as the static decoder keeps it), and with
    ``prefill_copy`` the prompt's once more (a prefill that kept its own cache, alive while the
    static decoder copies it into its buffers)."""
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    if shared_prompt:
        tokens = prompt_tokens * (1 + int(prefill_copy)) + beams * new_tokens
    else:
        tokens = beams * (prompt_tokens + new_tokens) + int(prefill_copy) * prompt_tokens
    kv = 2 * text.num_hidden_layers * kv_heads * head_dim * width * tokens
    # One layer's prefill activations live at a time: q/k/v/out projections, the MLP's three
    # intermediate tensors, and a few copies of the embedded prompt.
    act = prompt_tokens * (8 * text.hidden_size + 3 * text.intermediate_size) * width
    logits = 4 * text.vocab_size * beams * 2
    return kv + act + logits
