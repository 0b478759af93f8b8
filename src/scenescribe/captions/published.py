"""Keeping a checkpoint's run as its publishers ran it: explicit decoding, shipped tokenization.

Three things a published checkpoint can change behind the caller's back, each closed here:

- ``generation_config.json``: transformers fills every setting ``generate`` was not given from the
  checkpoint's file (Qwen2.5-VL's ``repetition_penalty=1.05``, sampling temperatures). We give
  every setting ourselves and reset the loaded models' own generation configs, so the file is
  read for its end tokens only.
- ``tokenizer.json``: transformers 5 rebuilds Llama-family tokenizers from ``tokenizer_config.json``
  (a Metaspace pre-tokenizer whose prepend scheme follows ``legacy``) and keeps only the vocabulary
  of the shipped file; a legacy-style file (``Prepend("▁")`` normalizer) then loses the ``▁`` the
  model saw after special tokens such as ``<image>`` (transformers PR #47700). ``check_prompt_ids``
  compares the prompt's ids from the shipped file, read by the ``tokenizers`` library alone, with
  the processor's, and puts the shipped pipeline back when they differ.
- a family's own end-of-answer tokens, which a generation config may not list.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scenescribe.errors import ConfigError

log = logging.getLogger("scenescribe.captions")


def decoding_settings(*, num_beams: int, max_new_tokens: int, min_new_tokens: int,
                      use_cache: bool) -> dict[str, Any]:
    """Every setting that shapes greedy or beam decoding, at its neutral value where unused.

    Sampling settings are transformers' own defaults, inert without sampling (``top_k=50`` is the
    value its validation expects then; the checkpoint's own, e.g. Qwen's ``top_k=1``, never apply).
    """
    return {
        "do_sample": False, "num_beams": num_beams, "num_beam_groups": 1,
        "temperature": 1.0, "top_p": 1.0, "top_k": 50, "min_p": None, "typical_p": 1.0,
        "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "length_penalty": 1.0,
        "early_stopping": False, "max_new_tokens": max_new_tokens,
        "min_new_tokens": min_new_tokens, "use_cache": use_cache,
    }


def reset_generation_configs(model: Any) -> list[int]:
    """Neutral generation configs on ``model`` and its submodules; returns the checkpoint's eos ids.

    InstructBLIP's language model carries a second config that its ``generate`` merges too.
    """
    from transformers import GenerationConfig

    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for module in model.modules():
        if isinstance(getattr(module, "generation_config", None), GenerationConfig):
            module.generation_config = GenerationConfig()
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else [int(i) for i in eos]


def shipped_tokenizer(folder: str | Path) -> Any | None:
    """The checkpoint's ``tokenizer.json`` read by the ``tokenizers`` library, if it ships one."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def check_prompt_ids(name: str, folder: str | Path, tokenizer: Any, prompt: str) -> bool:
    """Make ``tokenizer`` give ``prompt`` the ids the shipped ``tokenizer.json`` gives.

    Returns ``True`` when they already agreed (or nothing ships to compare with). On a mismatch,
    logs one line naming the first differing token, puts the shipped pipeline (normalizer,
    pre-tokenizer, decoder) back into the loaded tokenizer, and raises ``ConfigError`` if the ids
    still differ.
    """
    shipped = shipped_tokenizer(folder)
    if shipped is None:
        return True
    expected = shipped.encode(prompt, add_special_tokens=True).ids
    actual = list(tokenizer(prompt)["input_ids"])
    if actual == expected:
        return True
    at = first_difference(expected, actual)
    log.warning("%s: the loaded tokenizer gives different prompt ids from the shipped "
                "tokenizer.json (first at position %d: %s vs %s); using the shipped pipeline",
                name, at, _piece(shipped, expected, at), _piece(shipped, actual, at))
    backend = tokenizer.backend_tokenizer
    backend.normalizer = shipped.normalizer
    backend.pre_tokenizer = shipped.pre_tokenizer
    backend.decoder = shipped.decoder
    backend.post_processor = shipped.post_processor
    fixed = list(tokenizer(prompt)["input_ids"])
    if fixed != expected:
        at = first_difference(expected, fixed)
        raise ConfigError(f"{name}: {Path(folder) / 'tokenizer.json'}: the processor's prompt ids "
                          f"differ from the shipped tokenizer's at position {at}")
    return False


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a),
                                                                                      len(b)))


def _piece(tokenizer: Any, ids: list[int], at: int) -> str:
    return repr(tokenizer.id_to_token(ids[at])) if at < len(ids) else "end"


def fit_context(context: str, budget: int, count: Any) -> str:
    """The longest head of ``context`` (whole words) whose prompt fits ``budget`` tokens.

    ``count(text)`` gives the prompt's token count with ``text`` as the grounding context.
    """
    if count(context) <= budget:
        return context
    words = context.split(" ")
    lo, hi = 0, len(words) - 1  # the answer lies in [lo, hi]: words[:lo] fits or lo == 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])
