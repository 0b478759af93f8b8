"""The alignment heads' cross-attention over the audio frames, for a batch of chunks at once.

Only the alignment heads' weights are computed, from their queries and the encoder's keys, then
treated as openai-whisper does (``alignment_matrix``). The queries are kept while decoding by
``static_decode`` (its ``Decoding.attention``), or, after ``generate``, by a teacher-forced pass
whose states entering each alignment layer's cross-attention are kept (``AttentionCapture``).
The DTW that follows is numpy (``alignment``, ``dtw_child``).

Chunks are taken together, not one by one: those of a batch that share their first text row
and their frame count (every full 30 s chunk; each video's last chunk is shorter) are one
product per layer and one normalisation, their differing token counts masked. Chunk by chunk
this was about 40 small kernels each (1,800 for W1's 45 chunks), and inside Stage 1 each small
kernel waits for a free SM behind the other components' large ones.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

MEDIAN_WIDTH = 7  # openai-whisper's median filter over attention frames
# Weights computed at once: 256 MiB of float32, and about 8 times that while the median filter
# holds its lanes. W1's 45 chunks of large-v3 (10 heads, 225 rows, 1,500 frames) are three
# pieces; a checkpoint without published heads (every head of the upper half) takes more.
# Fewer, larger pieces mean fewer kernels, each of which may wait for the GPU inside Stage 1.
PIECE_CELLS = 1 << 26


class HeadAttention:
    """A batch's alignment-head weights over the audio frames, from wherever the heads'
    queries and keys were kept (``AttentionCapture`` after a teacher-forced pass;
    ``static_decode`` while decoding)."""

    heads: dict[int, list[int]]  # decoder layer -> alignment heads

    def head_products(self, index: list[int], whole: bool, layer: int, heads: list[int],
                      rows: range, frames: int) -> tuple[Any, Any]:
        """Layer ``layer``'s scaled queries ``[samples, heads, rows, dim]`` and keys
        ``[samples, heads, frames, dim]`` for the samples ``index`` (``whole``: every sample of
        the batch, in order)."""
        raise NotImplementedError

    def weights(self, samples: Sequence[int], rows: range, frames: int) -> Any:
        """``[len(samples), heads, len(rows), frames]`` float32 softmax weights of the alignment
        heads: the decoder positions ``rows`` of each of ``samples`` over its first ``frames``
        encoder frames."""
        import torch

        index = list(samples)
        whole = index == list(range(self.batch_size))
        scores = []
        for layer, heads in self.heads.items():
            q, k = self.head_products(index, whole, layer, heads, rows, frames)
            scores.append(q @ k.transpose(-1, -2))
        return torch.cat(scores, dim=1).float().softmax(dim=-1)

    @property
    def batch_size(self) -> int:
        raise NotImplementedError

    def matrices(self, samples: Sequence[int], rows: Sequence[range],
                 frames: Sequence[int]) -> list[np.ndarray]:
        """Per sample ``samples[i]`` of the batch, the ``[len(rows[i]), frames[i]]`` alignment
        matrix that ``alignment`` warps (float32, on the CPU); samples alike in first row and
        frame count computed together, at most ``PIECE_CELLS`` weights at a time."""
        import torch

        groups: dict[tuple[int, int], list[int]] = {}
        for i, (span, count) in enumerate(zip(rows, frames, strict=True)):
            groups.setdefault((span.start, count), []).append(i)
        heads = sum(len(h) for h in self.heads.values())
        out: list[np.ndarray] = [np.empty((0, 0), np.float32)] * len(rows)
        for (start, count), alike in groups.items():
            tall = max(len(rows[i]) for i in alike)
            per_sample = max(1, heads * tall * count)
            step = max(1, PIECE_CELLS // per_sample)
            for first in range(0, len(alike), step):
                members = alike[first:first + step]
                weights = self.weights([samples[i] for i in members], range(start, start + tall),
                                       count)
                real = torch.tensor([len(rows[i]) for i in members], device=weights.device)
                host = alignment_matrix(weights, real).cpu().numpy()  # one copy per piece
                for g, i in enumerate(members):
                    out[i] = host[g, : len(rows[i])]
        return out


class AttentionCapture(HeadAttention):
    """Forward pre-hooks keeping the decoder states that enter the alignment layers'
    cross-attention during a teacher-forced pass over ``encoder_states``, so only those heads'
    weights are computed afterwards."""

    def __init__(self, model: Any, heads: dict[int, list[int]], encoder_states: Any) -> None:
        self.layers = model.model.decoder.layers
        self.heads = heads
        self.encoder_states = encoder_states
        self.states: dict[int, Any] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> AttentionCapture:
        for layer in self.heads:
            def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     layer: int = layer) -> None:
                self.states[layer] = args[0] if args else kwargs["hidden_states"]

            attn = self.layers[layer].encoder_attn
            self._handles.append(attn.register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def batch_size(self) -> int:
        return int(self.encoder_states.shape[0])

    def head_products(self, index: list[int], whole: bool, layer: int, heads: list[int],
                      rows: range, frames: int) -> tuple[Any, Any]:
        attn = self.layers[layer].encoder_attn
        n, d = attn.num_heads, attn.head_dim
        states = self.states[layer] if whole else self.states[layer][index]
        encoded = self.encoder_states if whole else self.encoder_states[index]
        q = attn.q_proj(states[:, rows.start:rows.stop]) * attn.scaling
        k = attn.k_proj(encoded[:, :frames])
        q = q.view(q.shape[0], q.shape[1], n, d)[:, :, heads].transpose(1, 2)
        k = k.view(k.shape[0], k.shape[1], n, d)[:, :, heads].transpose(1, 2)
        return q, k


def alignment_matrix(weights: Any, rows: Any = None, width: int = MEDIAN_WIDTH) -> Any:
    """openai-whisper's treatment of alignment-head weights ``[..., heads, rows, frames]``:
    z-scored over rows, median-filtered over frames, averaged over heads. ``rows`` (with a
    batch dimension first): each sample's real rows, the rest padding, left out of its z-scores
    (and zero after them). Runs on the model's device: numpy's median took 0.25 s per 30 s chunk
    of large-v3, longer than decoding it on a GPU."""
    import torch
    import torch.nn.functional as F

    if rows is None:
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, correction=0)
        x = (weights - mean) / (std + 1e-8)
    else:
        real = torch.arange(weights.shape[-2], device=weights.device) < rows[:, None]
        keep = real[:, None, :, None].to(weights.dtype)  # [batch, 1, rows, 1]
        count = rows.to(weights.dtype)[:, None, None, None]
        mean = (weights * keep).sum(dim=-2, keepdim=True) / count
        spread = (((weights - mean) * keep) ** 2).sum(dim=-2, keepdim=True) / count
        x = (weights - mean) / (spread.sqrt() + 1e-8) * keep
    if x.shape[-1] > width // 2:
        shape = x.shape  # reflect padding takes at most three dimensions
        x = F.pad(x.reshape(-1, *shape[-2:]), (width // 2, width // 2), mode="reflect")
        if x.device.type == "cuda":
            x = sliding_median(x, width).reshape(shape)
        else:  # on CPU torch's median is the faster (3.7 s against 7.9 s for 20 chunks)
            x = x.unfold(-1, width, 1).median(dim=-1).values.reshape(shape)
    return x.mean(dim=-3)


def sliding_median(padded: Any, width: int) -> Any:
    """The median of each ``width`` consecutive values along the last dimension (odd
    ``width``): ``padded.unfold(-1, width, 1).median(-1).values``, computed as a
    compare-exchange network over ``width`` shifted views, each step one elementwise minimum
    and maximum. On CUDA ``median(dim)`` runs a radix select in a block per window: W1's
    150 million windows of 7 took 4-12 s inside Stage 1."""
    import torch

    count = padded.shape[-1] - width + 1
    lanes = [padded[..., i:i + count] for i in range(width)]
    for i, j in median_network(width):
        lanes[i], lanes[j] = torch.minimum(lanes[i], lanes[j]), torch.maximum(lanes[i], lanes[j])
    return lanes[width // 2]


@functools.cache
def median_network(width: int) -> tuple[tuple[int, int], ...]:
    """The compare-exchanges of an odd-even transposition sort of ``width`` lanes that the
    middle lane's final value depends on (the rest pruned), in order."""
    steps = [(i, i + 1) for r in range(width) for i in range(r % 2, width - 1, 2)]
    needed, kept = {width // 2}, []
    for i, j in reversed(steps):
        if i in needed or j in needed:
            kept.append((i, j))
            needed |= {i, j}
    return tuple(reversed(kept))
