"""The static caption decoder's prefill: the checkpoint's own forward, its keys and values
written straight into the decoder's buffers.

Held as transformers' dynamic cache and then copied, the prefill's cache doubled the decoder's
memory at its peak (109 GiB against 75 with ``generate``, LLaVA-Mistral at batch 64 on the
H200): the batch the GPU could hold was half what the decode needs. Here each layer of the cache
passed to the forward keeps its one update in a slice of the buffers (the attention reads the
layer's states themselves, alive for that layer only). A forward that ignores the cache it is
given (an argument name it does not know) shows in its output, and the caller then copies the
cache it made.
"""

from __future__ import annotations

import inspect
from functools import cache as memoized
from typing import Any

CACHE_ARGUMENTS = ("cache", "past_key_values")  # transformers 5.2x's name, then the older one


def prefill(model: Any, body: Any, inputs: dict[str, Any], positions: Any, keys: list[Any],
            values: list[Any]) -> tuple[Any, bool]:
    """The forward over left-padded prompts (last position's logits only); True when its cache
    went into ``keys`` and ``values`` (per layer, views ``[rows, kv_heads, length, head_dim]``
    whose first positions take the prompt)."""
    from transformers.cache_utils import Cache

    layer = _buffer_layer()
    given = Cache(layers=[layer(k, v) for k, v in zip(keys, values, strict=True)])
    name = cache_argument(model, body) or CACHE_ARGUMENTS[-1]
    out = model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1,
                **{name: given})
    return out, model_cache(out) is given


def cache_argument(model: Any, body: Any) -> str | None:
    """The name the checkpoint's forward takes its cache by: its own, else its decoder's (a
    forward that passes ``**kwargs`` through, as InstructBLIP's does); None if neither names
    one (the prefill then tries the older name, and its output tells)."""
    for module in (model, body):
        names = inspect.signature(module.forward).parameters
        for name in CACHE_ARGUMENTS:
            if name in names:
                return name
    return None


def model_cache(out: Any) -> Any:
    """The model output's cache: ``cache`` from transformers 5.2x, ``past_key_values`` before;
    InstructBLIP's output keeps its language model's output apart."""
    for name in CACHE_ARGUMENTS:
        if name in out:
            return out[name]
    return model_cache(out["language_model_outputs"])


@memoized
def _buffer_layer() -> type:
    """A dynamic cache layer whose one update lands in a slice of given buffers (made on first
    use: transformers is imported only by the backends that need it)."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):  # type: ignore[misc, valid-type]
        def __init__(self, keys: Any, values: Any) -> None:
            super().__init__()
            self.targets = (keys, values)

        def update(self, key_states: Any, value_states: Any, *args: Any,
                   **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            if self.keys.numel():
                raise RuntimeError("the static decoder's prefill cache takes one update")
            span = key_states.shape[-2]
            self.keys = self.targets[0][..., :span, :]
            self.values = self.targets[1][..., :span, :]
            self.keys.copy_(key_states)
            self.values.copy_(value_states)
            # The attention reads the layer's own contiguous states, as with transformers' cache:
            # the same kernels as before (a strided view could steer SDPA off its fused kernels).
            return key_states, value_states

    return BufferLayer
