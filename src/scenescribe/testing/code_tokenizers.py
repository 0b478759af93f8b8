"""Tokenizers built in code, for captioners without downloads (tiny tests, random-weight runs).

Real VLM checkpoints cannot be had on these machines, so tests (tiny models) and GPU benchmarks
(full-size architectures) build their tokenizers here. A tokenizer is a byte-level BPE trained on a
small English corpus (so the caption instruction tokenizes to a realistic length), with each
model's special tokens at their published ids and filler entries up to the model's vocabulary
size, so every id a random model can generate decodes.

Imported lazily (tokenizers, torch and transformers are needed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from scenescribe.captions.base import DEFAULT_PROMPT

# Text the code tokenizer learns its merges from: the caption instruction, the chat formats of the
# supported models and a little plain English.
_CORPUS = (
    DEFAULT_PROMPT,
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions. USER: ASSISTANT:",
    "[INST] [/INST] system user assistant User: Assistant: You are a helpful assistant.",
    "The scene shows a person walking along a street at night. A red car is parked near a "
    "building, and a dog sits on the grass. The camera pans to the left while people talk.",
    "Speech in this scene: Objects detected: Sounds heard: music, speech, a bird, a bus.",
)


def code_tokenizer(vocab_size: int, specials: Mapping[str, int], *, bos: str | None = None,
                   eos: str | None = None, pad: str | None = None, unk: str | None = None,
                   wrap: tuple[str | None, str | None] = (None, None), add_bos: bool = False,
                   named: Mapping[str, str] | None = None, merges_budget: int = 2000) -> Any:
    """A ``PreTrainedTokenizerFast`` of exactly ``vocab_size`` ids, special tokens at ``specials``.

    ``wrap`` is what the tokenizer adds around every text (``("<s>", None)`` for Llama's BOS,
    ``("[CLS]", "[SEP]")`` for BERT; ``add_bos=True`` is short for ``(bos, None)``); ``named``
    adds model-specific attributes (``{"image_token": "<image>"}``) that processors read.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=min(merges_budget, vocab_size - len(specials)),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    trained.train_from_iterator(list(_CORPUS) * 2, trainer)
    model = json.loads(trained.to_str())["model"]
    vocab = _layout(vocab_size, specials, list(model["vocab"]))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    head, tail = (bos, None) if add_bos and not any(wrap) else wrap
    if head or tail:
        ends = [t for t in (head, tail) if t]
        single = " ".join([*([head] if head else []), "$A", *([tail] if tail else [])])
        tok.post_processor = processors.TemplateProcessing(
            single=single, pair=f"{single} {single.replace('$A', '$B')}",
            special_tokens=[(t, specials[t]) for t in dict.fromkeys(ends)])
    roles = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk}
    kwargs = {k: v for k, v in roles.items() if v is not None}
    named = dict(named or {})
    extra = [t for t in specials if t not in kwargs.values()]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra, **kwargs)
    for attr, token in named.items():
        setattr(fast, attr, token)
    if named:  # saved with the tokenizer, read back by AutoTokenizer as attributes
        fast.init_kwargs.update(named)
    return fast


def _layout(vocab_size: int, specials: Mapping[str, int], learned: list[str]) -> dict[str, int]:
    """Place specials at their ids, learned tokens in the free ids, fillers after them."""
    if len(specials) + len(learned) > vocab_size:
        raise ValueError(f"vocabulary of {vocab_size} cannot hold {len(learned)} learned and "
                         f"{len(specials)} special tokens")
    taken = {i: t for t, i in specials.items()}
    if len(taken) != len(specials) or max(taken) >= vocab_size:
        raise ValueError(f"special token ids must be distinct and < {vocab_size}: {specials}")
    pending = [t for t in learned if t not in specials]
    vocab: dict[str, int] = dict(specials)
    filler = 0
    for i in range(vocab_size):
        if i in taken:
            continue
        if pending:
            vocab[pending.pop(0)] = i
        else:
            vocab[_filler(filler)] = i  # unreachable by merges; decodes as " zq<letters>"
            filler += 1
    return vocab


def _filler(n: int) -> str:
    letters = ""
    while True:
        n, r = divmod(n, 26)
        letters = chr(97 + r) + letters
        if n == 0:
            return "Ġzq" + letters
