"""Attention of one new token per row over a fixed cache buffer (the static decoder's step).

A buffer row holds one scene: its prompt once and, with beam search, every beam's tokens
(``static_decode``). A scene's beams, and a group's query heads, read that one row of key/value
heads as query positions of it, so the cache is never repeated per beam or per query head; a mask
per query position says which cache positions it reads (its beam's ancestry).

The buffer holds every row's prompt and the tokens decoded so far, padded to a fixed length, so
each step attends under a mask and SDPA cannot pick its flash kernel: on CUDA it falls to the
memory-efficient one, which is built for many query rows. Profiled on an H200 (2026-12-03,
``benchmarks/NOTES.md``), that kernel was charged 41 of LLaVA-Vicuna's 48 ms per step at 36 rows
of about 4,100 positions. Timed alone (``benchmarks/gpu/decode_attention.py``) both kinds read
the cache at 3-4 TB/s; inside the step, back to back, the step took 46.0 ms with SDPA and 30.6
ms with ``matmul`` (``profile_captions.py``), so CUDA takes ``matmul``.

``matmul`` computes the same attention as two batched matrix products, which cuBLAS runs as
bandwidth-bound matrix-vector work: the scores (one per query head and position, a few MB) are
the only extra traffic. A group of query heads that reads one key/value head is one product with
as many rows, so the cache is never repeated per query head. Scores are accumulated in float32
and taken in float32 where the GPU's batched product can write them so (CUDA), else rounded to the
cache's dtype first as transformers' eager attention does.
"""

from __future__ import annotations

from typing import Any

KINDS = ("matmul", "sdpa")
# Per device type, the faster kind where measured: on this project's CPU machine SDPA was as
# fast or up to 3x faster at W1's shapes scaled down (``benchmarks/gpu/decode_attention.py``); on
# the H200 ``matmul``, in the step (above).
FASTER = {"cuda": "matmul"}


def default_kind(device_type: str) -> str:
    """The kind the static decoder's step uses on ``device_type`` unless told otherwise."""
    return FASTER.get(device_type, "sdpa")


def attend_rows(query: Any, keys: Any, values: Any, mask: Any, scale: float, kind: str) -> Any:
    """``[rows, 1, heads * head_dim]``: the attention of ``query`` ``[rows, kv_heads, group,
    head_dim]`` (rows = scenes x beams, scene-major) over ``keys`` and ``values`` ``[scenes,
    kv_heads, length, head_dim]`` under ``mask`` (``query_mask``)."""
    rows, kv, group, dim = query.shape
    scenes = keys.shape[0]
    beams = rows // scenes
    out = attend(per_scene(query, scenes, beams), keys, values, mask, scale, kind)
    return out.view(scenes, kv, beams, group, dim).transpose(1, 2).reshape(rows, 1,
                                                                          kv * group * dim)


def per_scene(x: Any, scenes: int, beams: int) -> Any:
    """``[scenes * beams, heads, n, dim]`` as ``[scenes, heads, beams * n, dim]``: a scene's
    beams side by side in one row, beam-major."""
    if beams == 1:
        return x
    _, heads, n, dim = x.shape
    return x.view(scenes, beams, heads, n, dim).transpose(1, 2).reshape(scenes, heads,
                                                                        beams * n, dim)


def query_mask(valid: Any, scenes: int, beams: int, group: int) -> Any:
    """``[scenes, 1, beams * group, length]`` from ``valid`` ``[scenes * beams, length]``: for
    each query position of a scene's row (beam by beam, each beam's query heads of one key/value
    head), the cache positions it reads."""
    length = valid.shape[1]
    if beams == 1:
        return valid[:, None, None, :]  # broadcast over the group
    per_beam = valid.view(scenes, beams, 1, length)
    if group > 1:
        per_beam = per_beam.expand(scenes, beams, group, length)
    return per_beam.reshape(scenes, 1, beams * group, length)


def attend(query: Any, keys: Any, values: Any, valid: Any, scale: float, kind: str) -> Any:
    """``[rows, kv_heads, n, head_dim]`` attention outputs.

    ``query``: ``[rows, kv_heads, n, head_dim]`` (query positions of one row of key/value
    heads); ``keys``, ``values``: ``[rows, kv_heads, length, head_dim]``; ``valid``: ``[rows, 1,
    n or 1, length]`` bool, the positions each query reads (at least one each)."""
    if kind == "sdpa":
        import torch.nn.functional as F

        return F.scaled_dot_product_attention(query, keys, values, attn_mask=valid, scale=scale)
    if kind != "matmul":
        raise ValueError(f"unknown decode attention {kind!r}; expected one of {KINDS}")
    return _matmul(query, keys, values, valid, scale)


def _matmul(query: Any, keys: Any, values: Any, valid: Any, scale: float) -> Any:
    import torch

    rows, kv, group, dim = query.shape  # group: the query positions of a row
    length = keys.shape[2]
    flat_q = query.reshape(rows * kv, group, dim)
    flat_k = keys.reshape(rows * kv, length, dim).transpose(1, 2)
    scores = _scores(flat_q, flat_k).view(rows, kv, group, length)
    scores = scores.mul_(scale).masked_fill_(~valid, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(values.dtype)
    out = torch.bmm(probs.view(rows * kv, group, length), values.reshape(rows * kv, length, dim))
    return out.view(rows, kv, group, dim)


_FLOAT_SCORES: dict[tuple[str, Any], bool] = {}  # (device type, dtype) -> bmm writes float32


def _scores(query: Any, keys_t: Any) -> Any:
    """float32 ``query @ keys_t``: written as float32 by the product where the device can."""
    import torch

    if query.dtype == torch.float32:
        return torch.bmm(query, keys_t)
    key = (query.device.type, query.dtype)
    if _FLOAT_SCORES.get(key, True):
        try:
            scores = torch.bmm(query, keys_t, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            _FLOAT_SCORES[key] = False  # CPU, or an older torch: asked once
        else:
            _FLOAT_SCORES[key] = True
            return scores
    return torch.bmm(query, keys_t).float()  # rounded to the cache's dtype first, as eager
