"""What Whisper's word times and hallucination guard read of a decoded batch, per chunk.

``decoded_scores`` takes them from what the static decoder's steps kept (``static_decode``);
``forced_scores`` from a teacher-forced pass over the final tokens, for batches that
``generate`` decoded (beam search, ``decoder = "generate"``). Both give the same numbers up to
rounding: a causal decoder sees the same inputs at a position either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scenescribe.speech.alignment_heads import AttentionCapture, HeadAttention
from scenescribe.speech.static_decode import Decoding

# Columns of ``Decoding.watch_lp`` (the decoder's ``watched`` order): end-of-text, no-speech,
# then the language tokens where the decoder detects the language.
EOT, NO_SPEECH, LANGUAGES = 0, 1, 2


@dataclass(slots=True)
class TokenScores:
    """Per chunk: ``next_lp[b]`` the log-probability of each text token and then of
    end-of-text (positions ``rows[b]``), ``no_speech[b]`` the no-speech probability at the
    first position; ``attention`` the batch's alignment heads."""

    next_lp: list[np.ndarray]
    no_speech: np.ndarray
    attention: HeadAttention


def watched_tokens(config: Any) -> tuple[int, int]:
    """The token ids the static decoder keeps log-probabilities of, in ``EOT, NO_SPEECH``
    order (the no-speech token precedes no-timestamps in every Whisper vocabulary)."""
    return config.eos_token_id, config.no_timestamps_token_id - 1


def decoded_scores(decoding: Decoding, rows: Sequence[range]) -> TokenScores:
    """From the steps' own log-probabilities; a row's last entry is end-of-text's, as in the
    teacher-forced sequence (the decoder may have chosen another special token there)."""
    next_lp = []
    for b, span in enumerate(rows):
        lp = decoding.token_lp[b, span.start:span.stop].astype(np.float32)
        lp[-1] = decoding.watch_lp[b, span.stop - 1, EOT]
        next_lp.append(lp)
    return TokenScores(next_lp, np.exp(decoding.watch_lp[:, 0, NO_SPEECH]), decoding.attention)


def forced_scores(model: Any, heads: dict[int, list[int]], encoded: Any,
                  sequences: list[list[int]], rows: Sequence[range], no_speech_token: int,
                  pad: int) -> TokenScores:
    """One teacher-forced pass over ``sequences`` (prompt, text, end-of-text) keeping the
    alignment layers' states (``AttentionCapture``)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], device=encoded.device)
    capture = AttentionCapture(model, heads, encoded)
    with capture:
        logits = model(encoder_outputs=(encoded,), decoder_input_ids=ids, use_cache=False).logits
    logprobs = logits.float().log_softmax(dim=-1)
    no_speech = logprobs[:, 0, no_speech_token].exp().cpu().numpy()
    # Each position's log-probability of the token after it, for every chunk at once.
    after = logprobs[:, :-1].gather(2, ids[:, 1:, None])[..., 0].cpu().numpy()
    return TokenScores([after[b, span.start:span.stop] for b, span in enumerate(rows)],
                       no_speech, capture)
