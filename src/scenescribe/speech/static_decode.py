"""Greedy Whisper decoding over a preallocated cache: one CUDA graph replay per token on CUDA.

``generate`` in transformers launches about 20 kernels per decoder layer per token from Python
(640 for large-v3's 32 layers) and walks its cache classes, logits processors and stopping
criteria at every step: a large-v3 step costs tens of milliseconds whatever the batch, while
the GPU's own work for it (reading 1.8 GB of decoder weights and the batch's cross-attention
keys and values) is 1-3 ms. In Stage 1 that Python also shares the interpreter and the CPUs
with the other components' threads.

Here the cross-attention keys and values are computed once per batch into fixed buffers, the
self-attention cache is a fixed ``[batch, heads, length, head_dim]`` buffer written at a
position held on the device, and one step (embedding, 32 layers, logits, suppression, argmax,
forced prompt tokens, end-of-text bookkeeping) reads and writes only those buffers. On CUDA
that step is captured once per batch-size bucket as a CUDA graph and replayed: one launch per
token, with no Python between kernels. On CPU (and if capture fails) the same step runs eagerly.
The decoding is ``generate``'s: greedy, the prompt forced, the suppression mask of
``hf_whisper.SuppressMask``, a row stopping at end-of-text, at most ``max_new_tokens`` tokens.

What word times and the hallucination guard need is kept by the same step (``Decoding``): each
position's log-probability of the token after it and of a few watched tokens (end-of-text,
no-speech), and the alignment heads' cross-attention queries. The inputs of a causal decoder at
a position are the same whether it decodes or is teacher-forced over the final tokens, so these
are the teacher-forced pass's values (``alignment_heads``), without that pass: a 32-layer
forward of about 1,000 small kernels per batch, each of which waits for a free SM beside Stage
1's other components. One step more than ``generate`` runs, so that a row cut at the token
limit has its last token's queries too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scenescribe.gpu_share import capture_graph
from scenescribe.projections import one_product
from scenescribe.speech.alignment_heads import HeadAttention

log = logging.getLogger("scenescribe.speech")

BUCKET = 8  # graph batch sizes are multiples of this: a few graphs serve every batch
STOP_CHECK = 16  # steps between checks (one device sync) that every row has ended


@dataclass(slots=True)
class _Buffers:
    """Everything one step reads and writes, for ``rows`` rows of ``length`` positions."""

    rows: int
    length: int
    token: Any  # [rows] the step's input token
    pos: Any  # [1] the step's input position
    prompt: Any  # [rows, length] forced tokens, -1 where the model chooses
    seq: Any  # [rows, length] tokens so far
    done: Any  # [rows] row has produced end-of-text
    begin: Any  # [1] the position whose output is the first free token
    always: Any  # [vocab] tokens never chosen
    first: Any  # [vocab] tokens never chosen first
    not_language: Any  # [vocab] tokens not chosen where a prompt leaves its language open
    self_kv: Any  # [2, layers, rows, heads, length, head_dim]: the self-attention cache
    cross_kv: Any  # [layers, 2, rows, heads, frames, head_dim]: cross-attention keys, values
    self_k: list[Any]  # per layer, views of those two
    self_v: list[Any]
    cross_k: list[Any]
    cross_v: list[Any]
    watched: Any  # [watch] token ids whose log-probabilities every position keeps
    token_lp: Any  # [rows, length] float32: log-probability of the token after each position
    watch_lp: Any  # [rows, length, watch] float32: log-probabilities of ``watched``
    head_q: list[Any]  # per alignment layer [rows, heads, length, head_dim]: unscaled queries


@dataclass(slots=True)
class Decoding:
    """One batch's tokens and what the step kept for them; ``attention`` reads the decoder's
    buffers, valid until its next ``generate``."""

    tokens: list[list[int]]  # per row: the prompt, then the chosen tokens up to end-of-text
    token_lp: np.ndarray  # [rows, positions]: log-probability of the token after each position
    watch_lp: np.ndarray  # [rows, positions, watch]: log-probabilities of the watched tokens
    attention: HeadAttention


class StaticDecoder:
    """Greedy decoding of a ``WhisperForConditionalGeneration`` from encoder states, keeping
    the alignment heads' queries (``heads``: layer -> heads) and the log-probabilities of the
    tokens chosen and of ``watched``. A prompt entry of -1 before the first free position is
    chosen among ``languages`` (language detection, as transformers' ``detect_language``:
    the likeliest language token after start-of-transcript)."""

    def __init__(self, model: Any, graphs: bool, heads: dict[int, list[int]],
                 watched: Sequence[int], languages: Sequence[int] = ()) -> None:
        self.model = model
        self.graphs = graphs  # CUDA graphs on a CUDA device (off after a failed capture)
        self.heads = {layer: list(h) for layer, h in heads.items()}
        self.watched = list(watched)
        self.languages = list(languages)
        self._kept: dict[int, tuple[int, Any]] | None = None
        self.pad = False  # pad batches to buckets without graphs too (tests the graph layout)
        self._buffers: _Buffers | None = None
        self._graphs: dict[int, Any] = {}
        self._pool: Any = None
        # Each layer's self-attention q, k and v as one product (``projections``): a step is
        # many small dependent kernels, and inside Stage 1 each waits for a free SM behind the
        # other components' kernels, so every launch saved counts.
        self._qkv = [one_product(layer.self_attn, ("q_proj", "k_proj", "v_proj"))
                     for layer in model.model.decoder.layers]
        # And each layer's cross-attention keys and values, once per batch (``_fill``).
        self._cross = [one_product(layer.encoder_attn, ("k_proj", "v_proj"))
                       for layer in model.model.decoder.layers]

    def generate(self, encoded: Any, prompts: list[list[int]], max_new_tokens: int,
                 always: Any, first: Any, eot: int) -> Decoding:
        """Per row: the prompt then the chosen tokens, up to and including end-of-text, with
        what the steps kept (``Decoding``).

        ``encoded``: ``[rows, frames, d_model]`` encoder states; ``always``/``first``: boolean
        vocabulary masks of tokens never chosen / not chosen first (``SuppressMask``)."""

        n = encoded.shape[0]
        start = len(prompts[0])
        if any(len(p) != start for p in prompts):
            raise ValueError("prompts of one batch must have one length")
        if not self.languages and any(t < 0 for p in prompts for t in p):
            raise ValueError("an open prompt position needs the language tokens to choose from")
        limit = start + max_new_tokens  # positions a row may fill
        # One position more: the step that reads a row's last token at the limit.
        length = -(-(limit + 1) // BUCKET) * BUCKET
        use_graph = self.graphs and encoded.device.type == "cuda"
        rows = -(-n // BUCKET) * BUCKET if use_graph or self.pad else n
        buf = self._ensure(rows, length, encoded, always.shape[0])
        view = _rows(buf, rows)
        self._fill(view, encoded, prompts, eot)
        # Copied, not referenced: a captured graph reads the addresses it saw at capture.
        view.always.copy_(always)
        view.first.copy_(first)
        self._kept_heads(encoded.device)
        step = self._graph_step(view, eot) if use_graph else None
        steps = limit  # the last one reads the token at the limit; its choice is dropped
        for i in range(steps):
            if step is not None:
                step.replay()
            else:
                self._step(view, eot)
            if (i + 1) % STOP_CHECK == 0 and i + 1 >= start and bool(view.done[:n].all()):
                steps = i + 1
                break
        out = view.seq[:n, : min(steps + 1, limit)].cpu().tolist()
        return Decoding([_cut(row, eot) for row in out], view.token_lp[:n, :steps].cpu().numpy(),
                        view.watch_lp[:n, :steps].cpu().numpy(), _Attention(self, view, n))

    # buffers

    def _ensure(self, rows: int, length: int, encoded: Any, vocab: int) -> _Buffers:
        """Buffers of at least ``rows`` x ``length``; growing them drops the captured graphs."""
        buf = self._buffers
        frames = encoded.shape[1]
        if (buf is not None and buf.rows >= rows and buf.length == length
                and buf.cross_k[0].shape[2] == frames and buf.always.shape[0] == vocab):
            return buf
        import torch

        old_rows = buf.rows if buf is not None else 0
        self._buffers = buf = None  # the old buffers go before the new ones are made
        self._graphs.clear()
        decoder = self.model.model.decoder
        dev, dtype = encoded.device, encoded.dtype
        attn = decoder.layers[0].self_attn
        heads, dim = attn.num_heads, attn.head_dim
        rows = max(rows, old_rows)
        layers = len(decoder.layers)

        # One tensor each, so that a batch clears or fills them in a few calls (``_fill``).
        self_kv = torch.zeros(2, layers, rows, heads, length, dim, device=dev, dtype=dtype)
        cross_kv = torch.zeros(layers, 2, rows, heads, frames, dim, device=dev, dtype=dtype)
        long = {"device": dev, "dtype": torch.long}
        wide = {"device": dev, "dtype": torch.float32}
        self._buffers = _Buffers(
            rows, length, torch.zeros(rows, **long), torch.zeros(1, **long),
            torch.full((rows, length), -1, **long), torch.zeros((rows, length), **long),
            torch.zeros(rows, device=dev, dtype=torch.bool), torch.zeros(1, **long),
            torch.zeros(vocab, device=dev, dtype=torch.bool),
            torch.zeros(vocab, device=dev, dtype=torch.bool), self._not_language(vocab, dev),
            self_kv, cross_kv, list(self_kv[0]), list(self_kv[1]), list(cross_kv[:, 0]),
            list(cross_kv[:, 1]),
            torch.tensor(self.watched, **long), torch.zeros((rows, length), **wide),
            torch.zeros((rows, length, len(self.watched)), **wide),
            [torch.zeros(rows, len(h), length, dim, device=dev, dtype=dtype)
             for h in self.heads.values()])
        return self._buffers

    def _not_language(self, vocab: int, device: Any) -> Any:
        import torch

        mask = torch.ones(vocab, device=device, dtype=torch.bool)
        mask[[t for t in self.languages if t < vocab]] = False
        return mask

    def _fill(self, buf: _Buffers, encoded: Any, prompts: list[list[int]], eot: int) -> None:
        """This batch's cross-attention keys and values, prompts and a cleared cache."""
        import torch
        import torch.nn.functional as F

        n, frames = encoded.shape[:2]
        layers = self.model.model.decoder.layers
        for i, (layer, fused) in enumerate(zip(layers, self._cross, strict=True)):
            attn = layer.encoder_attn
            shape = (n, frames, attn.num_heads, attn.head_dim)
            if fused is not None:  # keys and values from one product, in one copy
                both = F.linear(encoded, *fused).view(n, frames, 2, *shape[2:])
                buf.cross_kv[i, :, :n].copy_(both.permute(2, 0, 3, 1, 4))
            else:
                buf.cross_k[i][:n].copy_(attn.k_proj(encoded).view(shape).transpose(1, 2))
                buf.cross_v[i][:n].copy_(attn.v_proj(encoded).view(shape).transpose(1, 2))
        buf.cross_kv[:, :, n:].zero_()
        buf.self_kv.zero_()  # masked positions are multiplied by 0: they must hold no NaN
        prompt = torch.tensor(prompts, device=buf.prompt.device)
        start = prompt.shape[1]
        buf.prompt.fill_(-1)
        buf.prompt[:n, :start] = prompt
        buf.prompt[n:, :start] = eot
        buf.seq.fill_(eot)
        buf.seq[:, :start] = buf.prompt[:, :start]
        buf.token.copy_(buf.seq[:, 0])
        buf.pos.zero_()
        buf.begin.fill_(start - 1)
        buf.done.zero_()
        buf.done[n:] = True  # padding rows never hold up the stop check

    # the step

    def _step(self, buf: _Buffers, eot: int) -> None:
        """One token for every row, reading and writing only ``buf`` (graph-safe)."""
        import torch
        import torch.nn.functional as F

        model = self.model
        decoder = model.model.decoder
        rows = buf.rows
        h = decoder.embed_tokens(buf.token)[:, None] + decoder.embed_positions.weight[buf.pos]
        keys = torch.arange(buf.length, device=buf.pos.device)
        bias = torch.zeros(1, 1, 1, buf.length, device=h.device, dtype=h.dtype)
        bias = bias.masked_fill(keys > buf.pos, float("-inf"))
        kept = self._kept_heads(buf.pos.device)  # made before a capture, which copies nothing
        for i, (layer, fused) in enumerate(zip(decoder.layers, self._qkv, strict=True)):
            attn = layer.self_attn
            heads, dim = attn.num_heads, attn.head_dim
            x = layer.self_attn_layer_norm(h)
            if fused is not None:
                q, k, v = F.linear(x, *fused).chunk(3, dim=-1)
            else:
                q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
            q = q.view(rows, 1, heads, dim).transpose(1, 2)
            buf.self_k[i].index_copy_(2, buf.pos, k.view(rows, 1, heads, dim).transpose(1, 2))
            buf.self_v[i].index_copy_(2, buf.pos, v.view(rows, 1, heads, dim).transpose(1, 2))
            # The queries' scaling inside the attention: one kernel fewer than scaling them.
            o = F.scaled_dot_product_attention(q, buf.self_k[i], buf.self_v[i],
                                               attn_mask=bias, scale=attn.scaling)
            h = h + attn.out_proj(o.transpose(1, 2).reshape(rows, 1, -1))
            cross = layer.encoder_attn
            x = layer.encoder_attn_layer_norm(h)
            q = cross.q_proj(x).view(rows, 1, heads, dim).transpose(1, 2)
            if i in kept:  # an alignment layer: keep its heads' queries at this position
                j, which = kept[i]
                kept_q = q if which is None else q.index_select(1, which)
                buf.head_q[j].index_copy_(2, buf.pos, kept_q)
            o = F.scaled_dot_product_attention(q, buf.cross_k[i], buf.cross_v[i],
                                               scale=cross.scaling)
            h = h + cross.out_proj(o.transpose(1, 2).reshape(rows, 1, -1))
            h = h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))
        logits = model.proj_out(decoder.layer_norm(h))[:, 0]
        mask = torch.where(buf.pos == buf.begin, buf.first, buf.always)
        if self.languages:  # an open prompt position: a language token (detection)
            mask = torch.where(buf.pos < buf.begin, buf.not_language, mask)
        mask = mask[: logits.shape[-1]]
        chosen = logits.masked_fill(mask, float("-inf")).argmax(dim=-1)
        after = buf.pos + 1
        forced = buf.prompt.index_select(1, after)[:, 0]
        chosen = torch.where(forced >= 0, forced, chosen)
        chosen = torch.where(buf.done, torch.full_like(chosen, eot), chosen)
        buf.done |= chosen == eot
        # Unsuppressed, as a teacher-forced pass scores them.
        logprobs = logits.float().log_softmax(dim=-1)
        buf.token_lp.index_copy_(1, buf.pos, logprobs.gather(1, chosen[:, None]))
        buf.watch_lp.index_copy_(1, buf.pos, logprobs.index_select(1, buf.watched)[:, None])
        buf.seq.index_copy_(1, after, chosen[:, None])
        buf.token.copy_(chosen)
        buf.pos.add_(1)

    def _kept_heads(self, device: Any) -> dict[int, tuple[int, Any]]:
        """Layer -> (its index in ``head_q``, the heads as an index tensor, or None for all)."""
        import torch

        if self._kept is None:
            decoder = self.model.model.decoder
            self._kept = {}
            for j, (layer, heads) in enumerate(self.heads.items()):
                every = heads == list(range(decoder.layers[layer].encoder_attn.num_heads))
                self._kept[layer] = (j, None if every else torch.tensor(heads, device=device))
        return self._kept

    def _graph_step(self, buf: _Buffers, eot: int) -> Any | None:
        """The step captured as a CUDA graph for ``buf.rows`` rows, or None to run eagerly."""
        import torch

        graph = self._graphs.get(buf.rows)
        if graph is not None:
            return graph
        saved = (buf.token.clone(), buf.seq.clone(), buf.done.clone())
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            # No other thread launches meanwhile (gpu_share): beside YOLO's thread a capture
            # once failed.
            graph = capture_graph(lambda: self._step(buf, eot), buf.pos.device, self._pool)
        except Exception as exc:  # a kernel or driver that cannot be captured: decode eagerly
            log.warning("CUDA graph capture failed (%s); Whisper decodes without graphs", exc)
            self.graphs = False
            graph = None
        else:
            self._graphs[buf.rows] = graph
        # Undo the warm-up and capture steps: the batch starts from its prompt.
        buf.token.copy_(saved[0])
        buf.seq.copy_(saved[1])
        buf.done.copy_(saved[2])
        buf.pos.zero_()
        buf.self_kv.zero_()
        return graph


class _Attention(HeadAttention):
    """The alignment heads' weights from the queries a batch's steps kept and its
    cross-attention keys (``buf``'s first ``rows`` rows)."""

    def __init__(self, decoder: StaticDecoder, buf: _Buffers, rows: int) -> None:
        self.heads = decoder.heads
        self.layers = decoder.model.model.decoder.layers
        self.buf = buf
        self.rows = rows

    @property
    def batch_size(self) -> int:
        return self.rows

    @property
    def device(self) -> Any:
        return self.buf.pos.device

    def head_products(self, index: list[int], whole: bool, layer: int, heads: list[int],
                      rows: range, frames: int) -> tuple[Any, Any]:
        j = list(self.heads).index(layer)
        q = self.buf.head_q[j][: self.rows] if whole else self.buf.head_q[j][index]
        keys = self.buf.cross_k[layer][: self.rows] if whole else self.buf.cross_k[layer][index]
        scaling = self.layers[layer].encoder_attn.scaling
        return q[:, :, rows.start:rows.stop] * scaling, keys[:, heads, :frames]


def _rows(buf: _Buffers, rows: int) -> _Buffers:
    """The first ``rows`` rows of ``buf`` (views: graphs captured on them stay valid)."""
    if rows == buf.rows:
        return buf
    return _Buffers(rows, buf.length, buf.token[:rows], buf.pos, buf.prompt[:rows],
                    buf.seq[:rows], buf.done[:rows], buf.begin, buf.always, buf.first,
                    buf.not_language,
                    buf.self_kv[:, :, :rows], buf.cross_kv[:, :, :rows],
                    [k[:rows] for k in buf.self_k], [v[:rows] for v in buf.self_v],
                    [k[:rows] for k in buf.cross_k], [v[:rows] for v in buf.cross_v],
                    buf.watched, buf.token_lp[:rows], buf.watch_lp[:rows],
                    [q[:rows] for q in buf.head_q])


def _cut(row: list[int], eot: int) -> list[int]:
    """A row up to its first end-of-text after the prompt (``generate`` pads with it)."""
    for i, token in enumerate(row):
        if token == eot:
            return row[: i + 1]
    return row
