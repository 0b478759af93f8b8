"""How a transformers captioner decodes: the decoder chosen, the settings, the end tokens.

``TransformersCaptioner`` mixes this in. Every setting ``generate`` would otherwise fill in from a
checkpoint's file is given explicitly (``published.decoding_settings``); the static decoder
(``static_decode``) runs the same greedy search with the same end tokens and ``min_new_tokens``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from scenescribe.captions.published import decoding_settings
from scenescribe.captions.static_decode import StaticCaptionDecoder
from scenescribe.captions.static_layout import language_model
from scenescribe.errors import ConfigError

log = logging.getLogger("scenescribe.captions")


class Decoding:
    """Decoder choice and decoding settings (see the module docstring)."""

    num_beams: ClassVar[int] = 1
    min_new_tokens_floor: ClassVar[int] = 0  # a family's own minimum caption length
    # Tokens the family ends an answer with, stopped on besides the generation config's eos.
    end_tokens: ClassVar[tuple[str, ...]] = ()
    name: str
    device: str
    options: Any
    model: Any
    processor: Any
    _checkpoint_eos: list[int]
    _static: StaticCaptionDecoder | None

    def generation_kwargs(self) -> dict[str, Any]:
        """Extra generation settings of this model family (e.g. beams)."""
        return {}

    @property
    def decoder(self) -> str:
        """``[captions] decoder``: "graph" (``static_decode``, one CUDA graph per step), "static"
        (the same step without graphs) or "generate" (transformers'). "auto": graph on CUDA for
        greedy and beam-search families alike (InstructBLIP's beams: 0.410 s/scene against
        generate's 0.574 on an H200, benchmarks/NOTES.md), else generate. Language models
        ``static_decode`` does not lay out use generate whatever is asked."""
        choice = self.options.decoder
        if choice == "auto":
            choice = "graph" if self.device.startswith("cuda") else "generate"
        if choice == "graph" and not self.device.startswith("cuda"):
            choice = "static"  # graphs are CUDA's
        return choice

    def _static_decoder(self, model: Any) -> StaticCaptionDecoder | None:
        if self.decoder == "generate" or not self.options.use_cache:
            return None
        lm = language_model(model)
        if lm is None:
            log.info("%s: its language model is not one static_decode lays out; decoding with "
                     "generate", self.name)
            return None
        return StaticCaptionDecoder(model, lm, graphs=self.decoder == "graph")

    def _decode_static(self, moved: dict[str, Any], stop_after: int | None = None,
                       ) -> list[list[int]] | None:
        """The new tokens of each row from ``static_decode``, with ``generate``'s settings; None
        (and ``generate`` from then on) when the checkpoint's forward refuses its arguments."""
        static = self._static
        if static is None or "attention_mask" not in moved or not static.fits(
                moved["input_ids"].shape[1], self.options.max_new_tokens):
            return None
        settings = self.decoding()
        eos = self._eos_ids()
        tokenizer = self.processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        try:
            return static.generate(moved, settings["max_new_tokens"],
                                         settings["min_new_tokens"], eos, pad,
                                         stop_after=stop_after, beams=self.num_beams)
        except TypeError as exc:  # a forward without position_ids or logits_to_keep
            log.warning("%s: the static decoder cannot run this checkpoint's forward (%s); "
                        "decoding with generate", self.name, exc)
            self._static = None
            return None

    def decoding(self) -> dict[str, Any]:
        """The effective decoding settings, every one explicit (recorded in ``run.json``)."""
        o = self.options
        # Random weights: a fixed output length, the worst case of a real run.
        min_new = o.max_new_tokens if o.random_weights else max(o.min_new_tokens,
                                                                  self.min_new_tokens_floor)
        settings = decoding_settings(num_beams=self.num_beams, max_new_tokens=o.max_new_tokens,
                                     min_new_tokens=min(min_new, o.max_new_tokens),
                                     use_cache=o.use_cache)
        settings.update(self.generation_kwargs())
        if self.processor is not None and self.model is not None:
            settings["stop_ids"] = sorted(self._stop_ids())
        return settings

    def generation_config(self) -> Any:
        """Greedy (or the family's beam search) with the model's KV cache, as the reference."""
        from transformers import GenerationConfig

        settings = self.decoding()
        settings.pop("stop_ids", None)
        tokenizer = self.processor.tokenizer
        eos = self._eos_ids()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        config = GenerationConfig(**settings, eos_token_id=eos, pad_token_id=pad,
                                  bos_token_id=tokenizer.bos_token_id)
        if self.options.use_cache and self.options.cache == "static":
            # A cache preallocated at the batch's full length: each step writes its one new
            # position in place, where the dynamic cache concatenates (copies) the whole cache in
            # every layer. Not compiled: on an H100 transformers' compiled decode step made W1's
            # captions twice as slow (compilation inside the run). Opt-in: on an H200 it was 10%
            # faster alone but slower inside the whole W1 job (112.5 s against 91.2 s).
            config.cache_implementation = "static"
            config.disable_compile = True
        return config

    def _eos_ids(self) -> list[int]:
        """The checkpoint's generation-config eos ids, then the family's own end tokens."""
        tokenizer = self.processor.tokenizer
        ids = list(self._checkpoint_eos)
        if not ids and tokenizer.eos_token_id is not None:
            ids = [tokenizer.eos_token_id]
        vocab = tokenizer.get_vocab()
        ids += [vocab[t] for t in self.end_tokens if t in vocab and vocab[t] not in ids]
        if not ids:
            raise ConfigError(f"{self.name}: the tokenizer has no end-of-sequence token")
        return ids

    def _stop_ids(self) -> set[int]:
        return set(self._eos_ids())
