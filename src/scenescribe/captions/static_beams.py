"""Beam search for the static caption decoder, on fixed buffers (graph-safe).

The same search as transformers' ``_beam_search`` with ``early_stopping=False`` (the settings
``published.decoding_settings`` gives): per scene, the top ``keep`` continuations over all beams
by summed log-probability (``keep`` = ``max(2, 1 + end tokens)`` x beams, so enough stay open when
the best ones end); the best ``beams`` unended ones continue, the ended ones among the first
``beams`` join the scene's finished hypotheses (scored by their mean log-probability per new
token), and a scene is closed once its best open beam cannot beat its worst finished one.
Every tensor has a fixed shape, so the choice is captured in the step's CUDA graph; no step reads
a value back to the CPU.

Row ``s * beams + b`` is beam ``b`` of scene ``s``; after each choice ``order`` names the row each
one continues, and the caller makes each row's cache positions follow it (``static_decode``: the
marks of which positions a row attends to, not the cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CLOSED = -1.0e9  # transformers' score for "never choose this": finite, so sums stay ordered
LENGTH_PENALTY = 1.0  # ``decoding_settings``' length_penalty: finished scores are per-token means


@dataclass(slots=True)
class BeamBuffers:
    """The search's state for ``scenes`` scenes of ``beams`` beams each."""

    scenes: int
    beams: int
    keep: int  # continuations considered per scene and step
    scores: Any  # [scenes, beams] float32 summed log-probabilities of the open beams
    tokens: Any  # [scenes, beams, max_new] the open beams' new tokens
    best: Any  # [scenes, beams, max_new] finished hypotheses, best first
    best_scores: Any  # [scenes, beams] float32
    best_done: Any  # [scenes, beams] slot holds a finished hypothesis
    open: Any  # [scenes, 1] the scene can still improve (transformers' early-stop heuristic)
    order: Any  # [scenes * beams] the cache row each row continues from
    first_ranks: Any  # [keep] the first ``beams`` ranks (only those may finish a hypothesis)
    last: Any  # [1] index of the last new token (``max_new_tokens - 1``): every beam ends there


def beam_buffers(scenes: int, beams: int, n_end: int, max_new: int, device: Any) -> BeamBuffers:
    import torch

    keep = max(2, 1 + n_end) * beams
    long = {"device": device, "dtype": torch.long}
    return BeamBuffers(
        scenes, beams, keep,
        torch.zeros(scenes, beams, device=device, dtype=torch.float32),
        torch.zeros(scenes, beams, max_new, **long), torch.zeros(scenes, beams, max_new, **long),
        torch.zeros(scenes, beams, device=device, dtype=torch.float32),
        torch.zeros(scenes, beams, device=device, dtype=torch.bool),
        torch.zeros(scenes, 1, device=device, dtype=torch.bool),
        torch.zeros(scenes * beams, **long),
        torch.arange(keep, device=device) < beams, torch.zeros(1, **long))


def beam_view(beam: BeamBuffers, scenes: int) -> BeamBuffers:
    """The first ``scenes`` scenes of ``beam`` (views: graphs captured on them stay valid)."""
    if scenes == beam.scenes:
        return beam
    b = beam.beams
    return BeamBuffers(scenes, b, beam.keep, beam.scores[:scenes], beam.tokens[:scenes],
                       beam.best[:scenes], beam.best_scores[:scenes], beam.best_done[:scenes],
                       beam.open[:scenes], beam.order[:scenes * b], beam.first_ranks, beam.last)


def start(beam: BeamBuffers, live: int, max_new: int, pad_id: int) -> None:
    """A fresh search for the first ``live`` scenes; the others (graph padding) start closed."""
    beam.scores.zero_()
    beam.scores[:, 1:] = CLOSED  # only the first beam's continuations count at the first step
    beam.tokens.fill_(pad_id)
    beam.best.fill_(pad_id)
    beam.best_scores.fill_(CLOSED)
    beam.best_done.zero_()
    beam.open.zero_()
    beam.open[:live] = True
    beam.last.fill_(max_new - 1)


def choose(beam: BeamBuffers, logits: Any, step: Any, min_new: Any, ends: Any) -> Any:
    """One step of the search from ``logits`` [scenes * beams, vocab]; returns each row's next
    input token and sets ``order``. ``step``: new tokens so far (a [1] tensor, advanced by the
    caller); end tokens are barred while it is below ``min_new``."""
    import torch

    s, b, keep = beam.scenes, beam.beams, beam.keep
    log_probs = torch.nn.functional.log_softmax(logits.float(), dim=-1)
    vocab = log_probs.shape[-1]
    barred = (step < min_new).expand(log_probs.shape[0])
    log_probs[:, ends] = torch.where(barred[:, None], float("-inf"), log_probs[:, ends])
    summed = (log_probs.view(s, b, vocab) + beam.scores[:, :, None]).view(s, b * vocab)
    top_scores, top = torch.topk(summed, k=keep)
    parents = top // vocab
    chosen = top % vocab
    candidates = torch.take_along_dim(beam.tokens, parents[:, :, None], dim=1)
    candidates.index_copy_(2, step, chosen[:, :, None])
    ended = torch.isin(chosen, ends) | (step >= beam.last)

    # The best unended continuations go on.
    going = top_scores + ended.to(torch.float32) * CLOSED
    onward = torch.topk(going, k=b)[1]
    beam.tokens.copy_(torch.take_along_dim(candidates, onward[:, :, None], dim=1))
    beam.scores.copy_(torch.take_along_dim(going, onward, dim=1))
    rows = torch.arange(s, device=logits.device)[:, None] * b
    beam.order.copy_((torch.take_along_dim(parents, onward, dim=1) + rows).view(-1))

    # Ended ones among the first ``beams`` ranks join the finished hypotheses if better.
    just = ended & beam.first_ranks[None, :]
    new_tokens = (step + 1).to(torch.float32)
    finished = top_scores / new_tokens ** LENGTH_PENALTY
    finished = finished + (~beam.open).to(torch.float32) * CLOSED
    finished = finished + (~just).to(torch.float32) * CLOSED
    merged = torch.cat((beam.best_scores, finished), dim=1)
    kept = torch.topk(merged, k=b)[1]
    beam.best.copy_(torch.take_along_dim(torch.cat((beam.best, candidates), dim=1),
                                         kept[:, :, None], dim=1))
    beam.best_scores.copy_(torch.take_along_dim(merged, kept, dim=1))
    beam.best_done.copy_(torch.take_along_dim(torch.cat((beam.best_done, just), dim=1), kept,
                                              dim=1))

    # Closed once the best open beam, at this length, cannot beat the worst finished one.
    best_open = beam.scores[:, :1] / new_tokens ** LENGTH_PENALTY
    worst = torch.where(beam.best_done, beam.best_scores.min(dim=1, keepdim=True)[0], CLOSED)
    beam.open &= (best_open > worst).any(dim=-1, keepdim=True)
    return torch.take_along_dim(beam.tokens, step.view(1, 1, 1).expand(s, b, 1), dim=2).view(-1)


def results(beam: BeamBuffers, scenes: int, max_new: int) -> list[list[int]]:
    """Each scene's best finished hypothesis, ``max_new`` tokens (padding after its end)."""
    return beam.best[:scenes, 0, :max_new].tolist()
