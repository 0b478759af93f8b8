"""The alignment heads' cross-attention over the audio frames, for a batch of chunks at once.

Only the alignment heads' weights are computed, from their queries and the encoder's keys, then
treated as openai-whisper does (``alignment_matrix``). The queries are kept while decoding by
``static_decode`` (its ``Decoding.attention``), or, after ``generate``, by a teacher-forced pass
whose states entering each alignment layer's cross-attention are kept (``AttentionCapture``).
The DTW that follows is numpy (``alignment``, ``dtw_child``).

Chunks are taken together, not one by one: those of a batch that share their first text row
(every chunk of one prompt) are one product per layer and one normalisation, their differing
token counts and frame counts masked, each chunk's median filter reflected at its own last
frame. Chunks end at the quietest point of their last 10 s, so nearly every chunk has a frame
count of its own: grouped by frame count, W1's 45 chunks were 45 groups and about 6,700
kernels, which inside Stage 1 took 4-6 s for 37 ms of GPU work (each launch waits for the
thread's turn at the interpreter: ``results/h200-2026-12-04-n``).
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

    def weights(self, samples: Sequence[int], rows: range, frames: int,
                counts: Any = None) -> Any:
        """``[len(samples), heads, len(rows), frames]`` float32 softmax weights of the alignment
        heads: the decoder positions ``rows`` of each of ``samples`` over its first ``frames``
        encoder frames, or over its first ``counts[i]`` (a tensor on the device; the frames
        after them weigh 0)."""
        import torch

        index = list(samples)
        whole = index == list(range(self.batch_size))
        scores = []
        for layer, heads in self.heads.items():
            q, k = self.head_products(index, whole, layer, heads, rows, frames)
            scores.append(q @ k.transpose(-1, -2))
        logits = torch.cat(scores, dim=1).float()
        if counts is not None:
            beyond = torch.arange(frames, device=logits.device) >= counts[:, None, None, None]
            logits = logits.masked_fill(beyond, float("-inf"))
        return logits.softmax(dim=-1)

    @property
    def batch_size(self) -> int:
        raise NotImplementedError

    def matrices(self, samples: Sequence[int], rows: Sequence[range],
                 frames: Sequence[int]) -> list[np.ndarray]:
        """Per sample ``samples[i]`` of the batch, the ``[len(rows[i]), frames[i]]`` alignment
        matrix that ``alignment`` warps (float32, on the CPU); samples of one first row
        computed together, at most ``PIECE_CELLS`` weights at a time."""
        import torch

        groups: dict[tuple[int, bool], list[int]] = {}
        for i, (span, count) in enumerate(zip(rows, frames, strict=True)):
            # A chunk too short to reflect at both ends is left unfiltered, as alone.
            groups.setdefault((span.start, count > MEDIAN_WIDTH // 2), []).append(i)
        heads = sum(len(h) for h in self.heads.values())
        out: list[np.ndarray] = [np.empty((0, 0), np.float32)] * len(rows)
        for (start, _), alike in groups.items():
            tall = max(len(rows[i]) for i in alike)
            per_sample = max(1, heads * tall * max(frames[i] for i in alike))
            step = max(1, PIECE_CELLS // per_sample)
            if step < len(alike):  # pieces of like lengths pad the least
                alike.sort(key=lambda i: frames[i], reverse=True)
            for first in range(0, len(alike), step):
                members = alike[first:first + step]
                wide = max(frames[i] for i in members)
                shape = [[len(rows[i]), frames[i]] for i in members]
                real = torch.tensor(shape, device=self.device)  # one upload per piece
                counts = real[:, 1] if any(f != wide for _, f in shape) else None
                weights = self.weights([samples[i] for i in members], range(start, start + tall),
                                       wide, counts)
                host = alignment_matrix(weights, real[:, 0], counts).cpu().numpy()
                for g, i in enumerate(members):
                    out[i] = host[g, : len(rows[i]), : frames[i]]
        return out

    @property
    def device(self) -> Any:
        """Where the weights are computed."""
        raise NotImplementedError


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

    @property
    def device(self) -> Any:
        return self.encoder_states.device

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


def alignment_matrix(weights: Any, rows: Any = None, frames: Any = None,
                     width: int = MEDIAN_WIDTH) -> Any:
    """openai-whisper's treatment of alignment-head weights ``[..., heads, rows, frames]``:
    z-scored over rows, median-filtered over frames, averaged over heads. ``rows`` (with a
    batch dimension first): each sample's real rows, the rest padding, left out of its z-scores
    (and zero after them). ``frames`` (the same batch dimension): each sample's real frames, its
    filter reflected at its own last one (the values after it are then padding). Runs on the
    model's device: numpy's median took 0.25 s per 30 s chunk of large-v3, longer than decoding
    it on a GPU."""
    import torch

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
        shape = x.shape
        index = reflected_frames(frames, shape[-1], width // 2, x.device)
        if frames is None:
            x = x.index_select(-1, index)
        else:  # each sample its own padding: [batch, 1, 1, frames + width - 1] over heads, rows
            x = x.gather(-1, index[:, None, None, :].expand(*shape[:-1], index.shape[-1]))
        x = x.reshape(-1, *x.shape[-2:])
        if x.device.type == "cuda":
            x = sliding_median(x, width).reshape(shape)
        else:  # on CPU torch's median is the faster (3.7 s against 7.9 s for 20 chunks)
            x = x.unfold(-1, width, 1).median(dim=-1).values.reshape(shape)
    return x.mean(dim=-3)


def reflected_frames(frames: Any, total: int, radius: int, device: Any) -> Any:
    """Source frames of a reflect padding by ``radius`` on both sides of ``total`` frames
    (``[total + 2 radius]``), or per sample at its own last frame ``frames[b] - 1`` (``[batch,
    total + 2 radius]``; beyond that frame they are padding and only kept in range)."""
    import torch

    at = torch.arange(-radius, total + radius, device=device).abs()
    if frames is None:
        return torch.where(at >= total, 2 * (total - 1) - at, at)
    last = frames[:, None] - 1
    return torch.where(at >= last + 1, 2 * last - at, at).clamp(min=0, max=total - 1)


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
