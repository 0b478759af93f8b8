"""A Whisper checkpoint's prompt and languages: English-only, forced, or detected per chunk.

A multilingual checkpoint's prompt is start-of-transcript, a language token, transcribe and
no-timestamps; an English-only one's start-of-transcript and no-timestamps. Where no language is
forced, each chunk's is the likeliest language token after start-of-transcript: the static
decoder chooses it in its first step (``chosen``), ``generate`` needs a decoder pass of its own
(``detect``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from scenescribe.speech.static_decode import Decoding
from scenescribe.speech.token_scores import LANGUAGES

log = logging.getLogger("scenescribe.speech")

Language = tuple[str | None, float | None]  # a chunk's language and its probability


class WhisperLanguages:
    """The prompts and languages of one loaded checkpoint (``generation``: its generation
    config) under the ``language`` option."""

    def __init__(self, generation: Any, language: str | None) -> None:
        self.generation = generation
        self.language = language
        self.multilingual = bool(getattr(generation, "is_multilingual", False))

    @property
    def detects(self) -> bool:
        """Whether each chunk's language is detected (multilingual, none forced)."""
        return self.multilingual and not self.language

    def tokens(self) -> list[int]:
        """The language tokens to detect among (none where nothing is detected)."""
        return list(self.generation.lang_to_id.values()) if self.detects else []

    def prompt(self, language: str | None) -> list[int]:
        """The forced tokens before the text; a multilingual model's language None is -1, left
        to the static decoder to choose (``StaticDecoder``)."""
        config = self.generation
        prompt = [config.decoder_start_token_id]
        if self.multilingual:
            chosen = -1 if language is None else config.lang_to_id[f"<|{language}|>"]
            prompt += [chosen, config.task_to_id["transcribe"]]
        return [*prompt, config.no_timestamps_token_id]

    def fixed(self, count: int, name: str) -> list[Language]:
        """Per chunk: "en" for an English-only model (``name``'s, warned about a forced other
        language), else the forced language."""
        if not self.multilingual:
            if self.language not in (None, "en"):
                log.warning("%s is English-only; language %r ignored", name, self.language)
            return [("en", 1.0)] * count
        return [(self.language, 1.0)] * count

    def detect(self, model: Any, encoded: Any) -> list[Language]:
        """Per chunk the likeliest language and its probability among the language tokens,
        from one decoder pass over start-of-transcript (``generate``'s path)."""
        import torch

        lang_to_id = self.generation.lang_to_id
        ids = encoded.new_full((encoded.shape[0], 1), self.generation.decoder_start_token_id,
                               dtype=torch.long)
        logits = model(encoder_outputs=(encoded,), decoder_input_ids=ids).logits[:, 0].float()
        probs = logits[:, list(lang_to_id.values())].softmax(dim=-1).cpu().numpy()
        names = [t.strip("<|>") for t in lang_to_id]
        return [(names[int(p.argmax())], float(p.max())) for p in probs]

    def chosen(self, decoding: Decoding) -> list[Language]:
        """Per chunk the language token the static decoder chose after start-of-transcript,
        and its probability among the language tokens (``detect``'s figure)."""
        names = {token: name.strip("<|>") for name, token in self.generation.lang_to_id.items()}
        logprobs = decoding.watch_lp[:, 0, LANGUAGES:]
        probs = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [(names[row[1]], float(p.max()))
                for row, p in zip(decoding.tokens, probs, strict=True)]
