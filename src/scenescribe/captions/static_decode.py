"""Caption decoding over a preallocated cache: one CUDA graph replay per token on CUDA.

``generate`` issues about a dozen kernels per layer per token from Python, and walks its cache
classes, logits processors and stopping criteria at every step: profiled on an H200 (second
session, ``benchmarks/NOTES.md``), a LLaVA-Mistral decode step at batch 64 was bound by that CPU
work, not by reading the weights and the cache. Here the prefill is the checkpoint's own forward
(images merged, the positions ``generate`` gives left-padded rows) writing its cache straight into
fixed ``[rows, kv_heads, length, head_dim]`` buffers (``static_prefill``), and one step
(embedding, every layer, logits, ``min_new_tokens``, end tokens) reads and writes only those
buffers. On CUDA the step is captured once per batch-size bucket as a CUDA graph and replayed:
one launch per token. On CPU (and where capture fails) the same step runs eagerly; tests compare
it with ``generate`` token for token.

Supported: language models laid out as Llama's (Llama, Mistral, Qwen2, Phi-3 with its fused
projections), RoPE positions, greedy search and beam search (``static_beams``).
``static_layout.language_model`` says whether a checkpoint is laid out so.

The buffers hold one row per scene: its prompt once, then at each step one position per beam
(beam ``b``'s token of step ``j`` at ``prompt + j * beams + b``). A beam attends to the prompt and
to the positions of its own ancestry, marked in ``valid``; when beams continue other beams, only
those marks follow them (a few bytes per position), never the cache. ``generate`` runs each
prompt once per beam and copies every beam's whole cache at every step; the first version here
(2026-12-03) ran the prompt once but still moved each beam's written positions at every step:
100 ms per step for InstructBLIP at 64 scenes on an H200, against 33 counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from scenescribe.captions import decode_attention, static_beams, static_fusion, static_prefill
from scenescribe.captions.static_layout import LanguageModel
from scenescribe.gpu_share import capture_graph
from scenescribe.knobs import env_flag

log = logging.getLogger("scenescribe.captions")

BUCKET = 8  # graph batch sizes are multiples of this: a few graphs serve every batch size
LENGTH_BUCKET = 256  # cache lengths are multiples of this: later, shorter batches reuse buffers
STOP_CHECK = 16  # steps between checks (one device sync) that every row has ended


@dataclass(slots=True)
class _Buffers:
    """Everything one step reads and writes, for ``rows`` rows of ``length`` positions."""

    rows: int  # scenes x beams
    length: int
    token: Any  # [rows] the step's input token
    position: Any  # [rows] its rotary position (left-padded rows count only their tokens)
    slot: Any  # [1] the cache position the step's first beam writes at
    lane: Any  # [rows] each row's beam: it writes at ``slot + lane``
    step: Any  # [1] new tokens so far (end tokens are barred while below ``min_new``)
    min_new: Any  # [1]
    valid: Any  # [rows, length] cache positions a row attends to (its scene's row)
    done: Any  # [rows] row has ended
    out: Any  # [rows, max_new] the chosen tokens
    cos: Any  # [length, rotary_dim] rotary table
    sin: Any
    keys: list[Any]  # per layer [scenes, kv_heads, length, head_dim]
    values: list[Any]
    beam: static_beams.BeamBuffers | None = None  # beam search's state (rows = scenes x beams)

    @property
    def beams(self) -> int:
        return self.beam.beams if self.beam is not None else 1


class StaticCaptionDecoder:
    """Greedy or beam decoding of one loaded checkpoint from its prefill, in fixed buffers."""

    def __init__(self, model: Any, lm: LanguageModel, graphs: bool) -> None:
        self.model = model
        self.lm = lm
        self.fusion = static_fusion.fuse(lm.body)  # norms in one kernel, projections in one
        self.graphs = graphs  # CUDA graphs on a CUDA device (off after a failed capture)
        self.pad = False  # pad batches to buckets without graphs too (tests the graph layout)
        self._buffers: _Buffers | None = None
        self._graphs: dict[int, Any] = {}
        self._pool: Any = None
        self._ends: Any = None  # [n_end] end token ids on the device
        # Whether the prefill writes its cache straight into the buffers: expected where the
        # forward names a cache argument, then as the last prefill did. The batch planner
        # counts a second copy of the cache where it does not.
        self.in_place = static_prefill.cache_argument(model, lm.body) is not None
        self.captures = 0
        # The step's attention (``decode_attention``): None picks the device's faster kind.
        self.attention: str | None = "sdpa" if env_flag("SCENESCRIBE_DECODE_SDPA") else None

    def fits(self, prompt_length: int, max_new_tokens: int) -> bool:
        total = prompt_length + max_new_tokens
        window = self.lm.sliding_window
        limit = self.lm.max_length
        return (limit is None or total <= limit) and (window is None or total <= window)

    def release(self) -> None:
        """Drop the buffers and graphs (after an out-of-memory error, or at unload)."""
        self._buffers = None
        self._graphs.clear()
        self._pool = None

    def generate(self, inputs: dict[str, Any], max_new_tokens: int, min_new_tokens: int,
                 end_ids: list[int], pad_id: int, stop_after: int | None = None, beams: int = 1,
                 ) -> list[list[int]]:
        """Per row, the ``max_new_tokens`` new tokens (``pad_id`` after a row's end token).

        ``inputs``: the processor's outputs on the device, ``input_ids`` left-padded with their
        ``attention_mask``. ``beams`` > 1: each row's best beam. ``stop_after``: only that many
        tokens (a warm-up: buffers and graph made at the real shape)."""
        import torch

        mask = inputs["attention_mask"]
        n, prompt = mask.shape
        length = -(-(prompt + beams * max_new_tokens) // LENGTH_BUCKET) * LENGTH_BUCKET
        device = mask.device
        use_graph = self.graphs and device.type == "cuda"
        if self.attention is None:
            self.attention = decode_attention.default_kind(device.type)
        scenes = -(-n // BUCKET) * BUCKET if use_graph or self.pad else n
        with torch.inference_mode():
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            buf = self._ensure(scenes, beams, length, max_new_tokens, device, end_ids)
            view = _rows(buf, scenes * beams)
            for cache in (*view.keys, *view.values):
                cache.zero_()  # masked positions are multiplied by 0: they must hold no NaN
            out, self.in_place = static_prefill.prefill(
                self.model, self.lm.body, inputs, positions, [k[:n] for k in view.keys],
                [v[:n] for v in view.values])
            self._fill(view, out, mask, positions[:, -1] + 1, min_new_tokens, max_new_tokens,
                       pad_id)
            del out
            step = self._graph_step(view, pad_id) if use_graph else None
            for i in range(1, min(max_new_tokens, stop_after or max_new_tokens)):
                if step is not None:
                    step.replay()
                else:
                    self._step(view, pad_id)
                if i % STOP_CHECK == 0 and self._finished(view, n):
                    break
            if view.beam is not None:
                return static_beams.results(view.beam, n, max_new_tokens)
            return view.out[:n, :max_new_tokens].tolist()

    @staticmethod
    def _finished(buf: _Buffers, n: int) -> bool:
        """Every one of the first ``n`` scenes has ended (one read from the device)."""
        if buf.beam is not None:
            return not bool(buf.beam.open[:n].any())
        return bool(buf.done[:n].all())

    # buffers

    def _ensure(self, scenes: int, beams: int, length: int, max_new: int, device: Any,
                end_ids: list[int]) -> _Buffers:
        """Buffers of at least ``scenes`` x ``beams`` rows of ``length`` positions; growing them
        (or another beam count) drops the captured graphs."""
        import torch

        buf = self._buffers
        ends = torch.tensor(sorted(set(end_ids)), device=device)
        rows = scenes * beams
        same_search = (buf is not None and (buf.beam.beams if buf.beam is not None else 1) == beams)
        if (buf is not None and same_search and buf.rows >= rows and buf.length >= length
                and buf.out.shape[1] >= max_new and self._ends is not None
                and torch.equal(self._ends, ends)):
            return buf
        old = (buf.rows, buf.length, buf.out.shape[1]) if buf is not None and same_search \
            else (0, 0, 0)
        self.release()  # the old buffers go before the new ones are made
        rows, length, max_new = max(rows, old[0]), max(length, old[1]), max(max_new, old[2])
        lm = self.lm
        dtype = lm.head.weight.dtype
        # The rotary table the checkpoint's own module gives these positions (any scaling).
        probe = torch.zeros(1, 1, lm.head_dim, device=device, dtype=dtype)
        cos, sin = lm.body.rotary_emb(probe, torch.arange(length, device=device)[None])

        def cache() -> list[Any]:
            return [torch.zeros(rows // beams, lm.kv_heads, length, lm.head_dim, device=device,
                                dtype=dtype) for _ in lm.body.layers]

        long = {"device": device, "dtype": torch.long}
        self._ends = ends
        self._buffers = _Buffers(
            rows, length, torch.zeros(rows, **long), torch.zeros(rows, **long),
            torch.zeros(1, **long), torch.arange(rows, **long) % beams, torch.zeros(1, **long),
            torch.zeros(1, **long),
            torch.zeros(rows, length, device=device, dtype=torch.bool),
            torch.zeros(rows, device=device, dtype=torch.bool),
            torch.zeros(rows, max_new, **long), cos[0].contiguous(), sin[0].contiguous(),
            cache(), cache())
        if beams > 1:
            self._buffers.beam = static_beams.beam_buffers(rows // beams, beams, len(ends),
                                                           max_new, device)
        return self._buffers

    def _fill(self, buf: _Buffers, out: Any, mask: Any, next_position: Any, min_new: int,
              max_new: int, pad_id: int) -> None:
        """The prefill's cache in each scene's row (copied where the forward kept its own), and
        the first token; the step's state set for the second."""
        n, prompt = mask.shape
        beams = buf.beams
        live = n * beams
        for cache, prefilled in zip((*buf.keys, *buf.values), self._prefilled(out), strict=True):
            if prefilled is not None:  # the forward kept its own cache: copied once
                cache[:n, :, :prompt].copy_(prefilled)
        buf.valid.zero_()
        buf.valid[:live, :prompt] = _per_beam(mask.bool(), beams)
        buf.valid[live:, 0] = True  # padding rows attend somewhere: no all-masked softmax
        buf.done.zero_()
        buf.done[live:] = True
        buf.out.fill_(pad_id)
        buf.min_new.fill_(min_new)
        buf.step.zero_()
        buf.position.zero_()
        buf.position[:live] = _per_beam(next_position, beams)
        buf.slot.fill_(prompt)
        logits = out.logits[:, -1]
        buf.token.zero_()
        if buf.beam is None:
            buf.token[:n] = self._choose(buf, logits, pad_id, rows=n)
            return
        static_beams.start(buf.beam, n, max_new, pad_id)
        first = _per_beam(logits, beams)
        rows = buf.rows - live  # padding scenes choose from zeros: they are closed from the start
        if rows:
            first = _cat_zeros(first, rows)
        buf.token.copy_(self._choose_beams(buf, first))
        # Every beam of a scene attends to the same positions so far: nothing follows the
        # first choice.

    def _choose(self, buf: _Buffers, logits: Any, pad_id: int, rows: int | None = None) -> Any:
        """The greedy token of each row (end tokens barred below ``min_new``), recorded at
        ``step``; rows already ended get ``pad_id``."""
        import torch

        rows = buf.rows if rows is None else rows
        logits = logits.float()
        barred = (buf.step < buf.min_new).expand(logits.shape[0])
        ends = self._ends
        logits[:, ends] = torch.where(barred[:, None], float("-inf"), logits[:, ends])
        chosen = logits.argmax(dim=-1)
        done = buf.done[:rows]
        chosen = torch.where(done, torch.full_like(chosen, pad_id), chosen)
        done |= torch.isin(chosen, ends)
        buf.out[:rows].index_copy_(1, buf.step, chosen[:, None])
        buf.step.add_(1)
        return chosen

    def _prefilled(self, out: Any) -> list[Any]:
        """Per buffer (keys of every layer, then values), the prefill's own cache where the
        forward did not write into the buffers, else None."""
        if self.in_place:
            return [None] * (2 * len(self.lm.body.layers))
        layers = static_prefill.model_cache(out).layers
        return [layer.keys for layer in layers] + [layer.values for layer in layers]

    def _choose_beams(self, buf: _Buffers, logits: Any) -> Any:
        assert buf.beam is not None
        tokens = static_beams.choose(buf.beam, logits, buf.step, buf.min_new, self._ends)
        buf.step.add_(1)
        return tokens

    # the step

    def _step(self, buf: _Buffers, pad_id: int) -> None:
        """One token for every row, reading and writing only ``buf`` (graph-safe)."""
        logits = self._forward(buf)
        if buf.beam is None:
            buf.token.copy_(self._choose(buf, logits, pad_id))
        else:
            buf.token.copy_(self._choose_beams(buf, logits))
            # Each beam's ancestry follows the beam it continues: the marks, not the cache.
            buf.valid.copy_(buf.valid.index_select(0, buf.beam.order))
        buf.position.add_(1)
        buf.slot.add_(buf.beams)

    def _forward(self, buf: _Buffers) -> Any:
        """The language model on each row's token: its keys and values written at ``slot`` +
        its lane in its scene's buffer row; returns the logits [rows, vocab]."""
        import torch
        import torch.nn.functional as F

        lm = self.lm
        kind = self.attention
        assert kind is not None  # ``generate`` picks it for the device before any step
        rows, heads, kv, dim, beams = buf.rows, lm.heads, lm.kv_heads, lm.head_dim, buf.beams
        scenes, group = rows // beams, heads // kv
        written = buf.slot + buf.lane  # [rows] where each row's keys and values go
        buf.valid.scatter_(1, written[:, None], True)
        attend = decode_attention.query_mask(buf.valid, scenes, beams, group)
        cos = buf.cos[buf.position][:, None, None, :]  # [rows, 1, 1, rotary_dim]
        sin = buf.sin[buf.position][:, None, None, :]
        h = lm.body.embed_tokens(buf.token)[:, None]  # [rows, 1, hidden]
        for i, (layer, fused) in enumerate(zip(lm.body.layers, self.fusion, strict=True)):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            if hasattr(attn, "qkv_proj"):
                qkv = attn.qkv_proj(x)
            elif fused.qkv is not None:
                qkv = F.linear(x, *fused.qkv)
            else:
                qkv = torch.cat((attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)), dim=-1)
            # Queries and keys side by side: one rotation for both.
            qk = _rotate(qkv[..., :(heads + kv) * dim].view(rows, heads + kv, 1, dim), cos, sin)
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[..., (heads + kv) * dim:]
            positions = written[:beams]  # the same for every scene
            per_scene = decode_attention.per_scene
            buf.keys[i].index_copy_(2, positions, per_scene(k, scenes, beams))
            buf.values[i].index_copy_(2, positions, per_scene(v.view(rows, kv, 1, dim), scenes,
                                                              beams))
            o = decode_attention.attend_rows(q.view(rows, kv, group, dim), buf.keys[i],
                                             buf.values[i], attend, attn.scaling, kind)
            h = h + attn.o_proj(o)
            x = layer.post_attention_layernorm(h)
            if fused.gate_up is None:
                h = h + layer.mlp(x)
            else:
                gate, up = F.linear(x, *fused.gate_up).chunk(2, dim=-1)
                h = h + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
        return lm.head(lm.body.norm(h))[:, 0]

    def _graph_step(self, buf: _Buffers, pad_id: int) -> Any | None:
        """The step captured as a CUDA graph for ``buf.rows`` rows, or None to run eagerly."""
        import torch

        graph = self._graphs.get(buf.rows)
        if graph is not None:
            return graph
        state = _state(buf)
        saved = [t.clone() for t in state]
        device = buf.slot.device
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = capture_graph(lambda: self._step(buf, pad_id), device, self._pool)
        except Exception as exc:  # a kernel or driver that cannot be captured: decode eagerly
            log.warning("CUDA graph capture failed (%s); captions decode without graphs", exc)
            self.graphs = False
            graph = None
        else:
            self._graphs[buf.rows] = graph
            self.captures += 1
        # Undo the warm-up and capture steps (their cache writes sit beyond every valid
        # position, and the next step overwrites them): the batch goes on from its prefill.
        for target, value in zip(state, saved, strict=True):
            target.copy_(value)
        return graph


def _state(buf: _Buffers) -> list[Any]:
    """The tensors a step changes, apart from the cache."""
    state = [buf.token, buf.position, buf.slot, buf.step, buf.valid, buf.done, buf.out]
    beam = buf.beam
    if beam is not None:
        state += [beam.scores, beam.tokens, beam.best, beam.best_scores, beam.best_done,
                  beam.open, beam.order]
    return state


def _per_beam(tensor: Any, beams: int) -> Any:
    """Each row repeated for its beams, rows of one scene together."""
    return tensor if beams == 1 else tensor.repeat_interleave(beams, dim=0)


def _cat_zeros(tensor: Any, rows: int) -> Any:
    """``tensor`` with ``rows`` rows of zeros after it (padding rows' logits)."""
    import torch

    return torch.cat((tensor, tensor.new_zeros((rows, *tensor.shape[1:]))))


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    """RoPE on the first ``cos.shape[-1]`` features of each head (Llama's half rotation)."""
    import torch

    width = cos.shape[-1]
    turned, rest = x[..., :width], x[..., width:]
    half = width // 2
    rotated = torch.cat((-turned[..., half:], turned[..., :half]), dim=-1)
    turned = turned * cos + rotated * sin
    return torch.cat((turned, rest), dim=-1) if rest.shape[-1] else turned


def _rows(buf: _Buffers, rows: int) -> _Buffers:
    """The first ``rows`` rows of ``buf`` (views: graphs captured on them stay valid)."""
    if rows == buf.rows:
        return buf
    beam = buf.beam
    if beam is not None:
        beam = static_beams.beam_view(beam, rows // beam.beams)
    scenes = rows // buf.beams
    return _Buffers(rows, buf.length, buf.token[:rows], buf.position[:rows], buf.slot,
                    buf.lane[:rows], buf.step, buf.min_new, buf.valid[:rows], buf.done[:rows],
                    buf.out[:rows], buf.cos, buf.sin, [k[:scenes] for k in buf.keys],
                    [v[:scenes] for v in buf.values], beam)
