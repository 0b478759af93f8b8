"""Small pieces of transformers Whisper decoding: the compute dtype, a chunk's decoding, the
checkpoint's token suppression as one precomputed mask, a sequence's text tokens and a video's
result from its chunks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from scenescribe.errors import ConfigError
from scenescribe.records import Word
from scenescribe.speech.base import SpeechResult
from scenescribe.speech.guard import LOG_PROB_FLOOR, LanguageVote, SpeechGuard

log = logging.getLogger("scenescribe.speech")
GUARD = SpeechGuard(log_prob_floor=LOG_PROB_FLOOR)

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def dtype_name_for(option: str, device: str) -> str:
    """``default`` is float16 on CUDA and float32 on CPU; int8 kinds are CTranslate2-only."""
    if option == "default":
        return "float16" if device.startswith("cuda") else "float32"
    if option not in _DTYPES:
        raise ConfigError(f"speech.compute_type {option!r} is not supported by transformers "
                          f"Whisper; use one of: default, {', '.join(_DTYPES)}")
    return _DTYPES[option]


@dataclass(slots=True)
class Decoded:
    """One chunk's decoding: words on the video clock and the scores the guard reads."""

    words: list[Word]
    text: str
    language: str | None
    language_probability: float | None
    no_speech_prob: float
    avg_logprob: float
    truncated: bool = False  # the decoder hit its token limit before end-of-text

    def keep(self) -> bool:
        why = GUARD.reason(self.text, self.avg_logprob, self.no_speech_prob, self.truncated)
        if why is not None and self.text.strip():
            log.debug("dropped chunk at %.2f %r (%s)", self.words[0].start if self.words
                      else -1.0, self.text, why)
        return why is None



class SuppressMask:
    """Logits processor: ``suppress`` tokens never, ``begin`` tokens not as the first token."""

    def __init__(self, vocab: int, suppress: Any, begin: Any, begin_index: int,
                 device: str) -> None:
        import torch

        self.always = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.always[[t for t in suppress if t < vocab]] = True
        self.first = self.always.clone()
        self.first[[t for t in begin if t < vocab]] = True
        self.begin_index = begin_index

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        mask = self.first if input_ids.shape[-1] == self.begin_index else self.always
        return scores.masked_fill(mask[: scores.shape[-1]], float("-inf"))


def text_tokens(sequence: list[int], eot: int) -> list[int]:
    """Text tokens of one generated sequence: any prompt skipped, up to the first special."""
    start = 0
    while start < len(sequence) and sequence[start] > eot:  # prompt tokens follow eot's id
        start += 1
    out = []
    for token in sequence[start:]:
        if token >= eot:
            break
        out.append(token)
    return out


def speech_result(kept: list[Decoded], extra: dict[str, object]) -> SpeechResult:
    """A video's result from its kept chunks: words in time order, the language by vote."""
    words = sorted((w for d in kept for w in d.words), key=lambda w: w.start)
    if not words:
        return SpeechResult(extra=extra)
    vote = LanguageVote()
    for d in kept:
        if d.words:  # a chunk votes for the span its words cover
            vote.add(d.language, d.words[-1].end - d.words[0].start, d.language_probability)
    language, probability = vote.result()
    return SpeechResult(tuple(words), language, probability, extra=extra)
