"""Attention on the GPU: which fused SDPA kernels torch may pick (flash and memory-efficient, not
cuDNN), and grouped-query decoding without copying the cache (``packed_sdpa_attention``).

Measured on the H200 (torch 2.11, ``benchmarks/gpu/profile_stage1.py``): in Whisper large-v3's
pooled decoding torch chose cuDNN's fused attention, which plans its kernel for each new
sequence length; as the key length grows by one every step, each call cost about 1 ms of CPU for
58 us of GPU work (14,432 calls: 15 s of CPU, 0.8 s of GPU), and the GPU sat idle. Flash and
memory-efficient attention take any length without planning. ``SCENESCRIBE_CUDNN_SDPA=1`` keeps
torch's own choice (for measuring the difference).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("scenescribe")
CUDNN_ENV = "SCENESCRIBE_CUDNN_SDPA"


def avoid_cudnn_attention(device: str) -> bool:
    """Turn cuDNN's SDPA kernel off process-wide on CUDA hosts; returns whether it did.

    Process-wide on purpose: torch's backend flags are global, and every model here decodes
    with a growing key length. Idempotent, so each GPU backend calls it at load.
    """
    if not device.startswith("cuda") or os.environ.get(CUDNN_ENV, "").strip() == "1":
        return False
    import torch

    if torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN attention off: flash / memory-efficient SDPA kernels for decoding")
    return True


PACKED_SDPA = "scenescribe_packed_sdpa"
PACKED_ENV = "SCENESCRIBE_PACK_GQA"  # "0": keep transformers' own SDPA (for measuring)


def packed_sdpa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                          dropout: float = 0.0, scaling: float | None = None,
                          **kwargs: Any) -> tuple[Any, None]:
    """transformers' SDPA attention, but one query token over grouped key/value heads with a
    padding mask runs on the key/value heads as they are.

    transformers (5.17) copies each key/value head once per query head of its group
    (``repeat_kv``) whenever a mask is given, which a left-padded batch always has: in every
    decoding step every layer then copies the whole cache, four times over for Mistral-7B's
    32 query heads on 8 key/value heads. With a single query token, a group's query heads can
    stand in for query positions instead (``(B, H, 1, D)`` seen as ``(B, H_kv, H / H_kv, D)``):
    the mask, shared by every head and position, broadcasts, and nothing is copied. Measured on
    an H200 (LLaVA-Mistral, batch 64): 0.384 -> 0.377 s/scene; the copy is not what bounds a
    decoding step, but avoiding it costs nothing.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    if (groups > 1 and query.shape[2] == 1 and attention_mask is not None
            and attention_mask.dim() == 4 and attention_mask.shape[1] == 1
            and attention_mask.shape[2] == 1 and key.shape[1] * groups == query.shape[1]
            and all(kwargs.get(k) is None for k in ("position_bias", "softcap", "s_aux"))
            and not kwargs.get("output_attentions", False)):
        batch, heads, _, dim = query.shape
        packed = query.reshape(batch, heads // groups, groups, dim)
        out = torch.nn.functional.scaled_dot_product_attention(
            packed, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
        return out.reshape(out.shape[0], heads, 1, dim).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, **kwargs)


def pack_grouped_decoding(model: Any) -> list[str]:
    """Switch every grouped-query language model inside ``model`` that runs transformers' SDPA
    to ``packed_sdpa_attention``; returns the switched models' class names.

    Only those: other parts (vision towers, multi-head models) keep their attention untouched.
    ``SCENESCRIBE_PACK_GQA=0`` switches nothing.
    """
    if os.environ.get(PACKED_ENV, "").strip() == "0":
        return []
    from transformers import AttentionInterface, PreTrainedModel
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    switched = []
    for module in model.modules():
        config = getattr(module, "config", None)
        if not isinstance(module, PreTrainedModel) or config is None:
            continue
        heads = getattr(config, "num_attention_heads", None)
        kv_heads = getattr(config, "num_key_value_heads", None)
        if (not heads or not kv_heads or kv_heads >= heads
                or getattr(config, "_attn_implementation", None) != "sdpa"
                or not module._can_set_attn_implementation()):
            continue
        module.set_attn_implementation(PACKED_SDPA)
        switched.append(type(module).__name__)
    if switched:
        log.info("grouped heads packed for one-token attention in %s", ", ".join(switched))
    return switched
