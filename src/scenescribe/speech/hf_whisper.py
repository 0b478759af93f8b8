"""Whisper on transformers (torch): the GPU path.

Long-form audio is cut into chunks of at most 30 s at quiet points (``chunking``), chunks
without sound are skipped, and the rest are decoded in batches of ``batch_size`` (fp16 or bf16
on CUDA, float32 on CPU), on a CUDA stream of Whisper's own (with
``SCENESCRIBE_SPEECH_EXCLUSIVE=1`` each batch holds the GPU alone: see ``_gpu_hold``). Over
several videos (the speech stage), ``transcribe_many`` pools every video's chunks into one
batched stream (``pool``): child processes (``audio_child``) decode the next videos' audio
while the model works, and each video's result is routed back as its last chunk is decoded. The
encoder runs with SDPA (FlashAttention-2 when ``flash_attn`` is installed on CUDA). Greedy
decoding runs in ``static_decode``: a fixed cache and, on CUDA, one CUDA graph replay per token
(``decoder = "generate"`` keeps transformers' ``generate``, which beam search still uses). Word
times come from the alignment heads' cross-attention over the audio frames, aligned to the
frames by dynamic time warping (``alignment``), as openai-whisper does. The static decoder keeps
those heads' queries, each token's log-probability and, where no language is forced, detects
the language in its own first step (``static_decode``, ``token_scores``); after ``generate``,
a second, teacher-forced pass computes them. No attention weights are kept while decoding:
``generate(return_token_timestamps=True)`` would switch the whole model to eager attention and
keep every layer's attention at every step.

Hallucination guard: an energy gate (no chunk whose loudest 10 ms is below -55 dBFS reaches the
model), then the shared ``guard.SpeechGuard`` with a floor on the mean token log-probability
(no VAD protects this decoder). A chunk is judged whole; its repetition counts only when the
decoding ran out of tokens (a 30 s montage of real GRID sentences, each said twice, compresses
at 2.42 and was dropped whole before). Chunks are decoded independently (no conditioning on
previous text).

Measured with ``generate`` on one H100 (large-v3 architecture, random weights, fp16, 100 new
tokens per 30 s chunk): 242x real time at batch 32 (11 GiB peak), 121x at 16, 79x at 8, 9.5x
at 1; at batch 16, 3.0 s of 3.6 s was ``generate`` (about 30 ms per step whatever the batch:
launch-bound), the encoder 0.12 s, the alignment pass with DTW 0.26 s. On W1 in Stage 1 (H200,
224 tokens per chunk, beside the other components' threads) it ran at 22x real time; the
static decoder is the answer (benchmarks/NOTES-speech.md).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scenescribe.attention import avoid_cudnn_attention
from scenescribe.backend import load_pretrained, ready_device
from scenescribe.gpu_share import exclusive, launching, stream_for_loaded_model
from scenescribe.knobs import env_flag
from scenescribe.media import SAMPLE_RATE
from scenescribe.media.audio_child import ChildReader, audio_readers
from scenescribe.media.audio_spool import teeing
from scenescribe.phases import PhaseClock
from scenescribe.progress import Progress, Task
from scenescribe.records import VideoInfo, Word
from scenescribe.speech.alignment import align_words
from scenescribe.speech.base import AudioReads, SpeechRecognizer, SpeechResult
from scenescribe.speech.chunking import speech_chunks
from scenescribe.speech.dtw_child import token_frames_apart
from scenescribe.speech.log_mel import LogMel
from scenescribe.speech.pool import transcribe_pooled
from scenescribe.speech.static_decode import Decoding, StaticDecoder
from scenescribe.speech.token_scores import (
    NO_SPEECH,
    decoded_scores,
    forced_scores,
    watched_tokens,
)
from scenescribe.speech.whisper_languages import WhisperLanguages
from scenescribe.speech.whisper_parts import (
    Decoded,
    SuppressMask,
    dtype_name_for,
    speech_result,
    text_tokens,
)

log = logging.getLogger("scenescribe.speech")

MAX_NEW_TOKENS = 224  # openai-whisper's sample length: half the decoder context
SAMPLES_PER_FRAME = 320  # one encoder frame: 2 mel hops of 160 samples (20 ms)
@dataclass(slots=True)
class _Loaded:
    net: Any  # WhisperForConditionalGeneration
    processor: Any  # WhisperProcessor
    suppress: list[int]  # never generated
    begin: list[int]  # never generated first
    stream: Any = None  # Whisper's own CUDA stream (see ``decode``)
    # Greedy decoders without ``generate`` (see ``decode``), with and without CUDA graphs.
    static: dict[bool, StaticDecoder] = field(default_factory=dict)
    log_mel: LogMel | None = None  # made at the first batch
    languages: WhisperLanguages | None = None  # made when first asked


class TransformersWhisperRecognizer(SpeechRecognizer):
    """transformers Whisper, batched over 30 s chunks, word times by cross-attention DTW."""

    block_seconds = 600.0  # audio held at once (see chunking.stream_pieces)
    search_seconds = 30.0
    chunk_seconds = 30.0  # Whisper's window
    chunk_search_seconds = 10.0  # a chunk ends at the quietest point of its last 10 s
    max_new_tokens = MAX_NEW_TOKENS
    # Imported under the load lock; the rest of the load overlaps the other components' (only
    # ``from_pretrained`` itself holds the lock: see backend.py).
    load_imports = ("torch", "transformers:WhisperForConditionalGeneration",
                    "transformers:WhisperProcessor", "transformers:WhisperFeatureExtractor",
                    "transformers:WhisperTokenizer", "transformers:WhisperTokenizerFast")
    side_by_side = True
    reads_while_loading = True
    fills_audio_spools = True
    _clock: PhaseClock | None = None

    def phase_seconds(self) -> dict[str, float]:
        return self._clock.seconds() if self._clock is not None else {}

    def _phase(self, name: str, gpu: bool = True) -> contextlib.AbstractContextManager[None]:
        """Times a phase of ``decode`` (``phases``). A ``gpu`` phase on CUDA waits for the
        current stream (Whisper's) at its end, so the GPU's work is charged to the phase that
        queued it: three waits per batch, each where the next phase reads results anyway."""
        if self._clock is None:
            self._clock = PhaseClock()
        wait = None
        if gpu and self.device.startswith("cuda"):
            import torch

            wait = torch.cuda.current_stream().synchronize
        return self._clock.phase(name, wait)

    def _load(self) -> Any:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        path = self.weights()
        dtype = getattr(torch, dtype_name_for(self.options.compute_type, self.device))
        log.info("loading %s on %s (%s)", path, self.device, dtype)
        avoid_cudnn_attention(self.device)
        processor = WhisperProcessor.from_pretrained(path)
        ready_device(self.device)
        try:
            model = load_pretrained(self, WhisperForConditionalGeneration, path, dtype,
                                    attn_implementation=self.attention)
        except (ImportError, ValueError, RuntimeError) as exc:
            if self.attention == "sdpa":
                raise
            # A flash_attn built for another torch or GPU: SDPA is nearly as fast for Whisper.
            log.warning("FlashAttention-2 unusable (%s); using SDPA", exc)
            model = load_pretrained(self, WhisperForConditionalGeneration, path, dtype,
                                    attn_implementation="sdpa")
        # transformers rebuilds isin(arange(vocab), tokens) at every decoding step for these,
        # 40% of tiny.en's CPU decoding time; SuppressMask applies them from a fixed mask.
        config = model.generation_config
        suppress, begin = list(config.suppress_tokens or ()), list(config.begin_suppress_tokens or ())
        config.suppress_tokens = config.begin_suppress_tokens = None
        stream = None
        if self.device.startswith("cuda"):
            # High priority: decoding is many tiny latency-bound kernels; the taggers' and the
            # detector's large kernels lose little by yielding to them.
            stream = stream_for_loaded_model(self.device, priority=-1)
        return _Loaded(model, processor, suppress, begin, stream)

    _decoder: str | None = None  # set by tests and benchmarks to compare decoders

    @property
    def decoder(self) -> str:
        """``[speech] decoder``: "graph" (``static_decode`` with one CUDA graph per step; what
        "auto" means on CUDA), "static" (the same without graphs; "auto" elsewhere), or
        "generate" (transformers'; beam search uses it). A capture once failed beside Stage 1's
        other GPU threads ("operation not permitted when stream is capturing" in YOLO's thread);
        since captures hold ``gpu_share.capturing`` no other thread launches meanwhile, and in
        the whole W1 job on the H200 speech took 15.7 s against 19.5 s without graphs."""
        if self._decoder is not None:
            return self._decoder
        if self.options.decoder == "auto":
            return "graph" if self.device.startswith("cuda") else "static"
        return self.options.decoder

    @decoder.setter
    def decoder(self, value: str) -> None:
        self._decoder = value

    @property
    def attention(self) -> str:
        """FlashAttention-2 on CUDA in half precision when ``flash_attn`` is installed, else SDPA
        (which itself picks a flash or memory-efficient kernel on CUDA)."""
        half = dtype_name_for(self.options.compute_type, self.device) != "float32"
        if self.device.startswith("cuda") and half and importlib.util.find_spec("flash_attn"):
            return "flash_attention_2"
        return "sdpa"

    def facts(self) -> dict[str, Any]:
        attention = (getattr(self.model.net.config, "_attn_implementation", None)
                     if self.loaded else None) or self.attention
        decoder = self.decoder if self.options.beam_size <= 1 else "generate"
        if decoder == "graph" and not self.device.startswith("cuda"):
            decoder = "static"  # graphs are CUDA's
        elif self.loaded and any(not s.graphs for g, s in self.model.static.items() if g):
            decoder = "static (graph capture failed)"
        return {**super().facts(), "engine": "transformers", "attention": attention,
                "dtype": dtype_name_for(self.options.compute_type, self.device),
                "decoder": decoder}

    @property
    def multilingual(self) -> bool:
        return self._langs.multilingual

    @property
    def _langs(self) -> WhisperLanguages:
        """The loaded checkpoint's prompts and languages under the ``language`` option."""
        loaded: _Loaded = self.model
        if loaded.languages is None:
            loaded.languages = WhisperLanguages(loaded.net.generation_config,
                                                self.options.language)
        return loaded.languages

    def alignment_heads(self) -> dict[int, list[int]]:
        """Layer -> heads; openai-whisper's fallback is every head of the upper half."""
        config = self.model.net.config
        pairs = getattr(self.model.net.generation_config, "alignment_heads", None)
        if not pairs:
            pairs = [(layer, head) for layer in range(config.decoder_layers // 2,
                                                      config.decoder_layers)
                     for head in range(config.decoder_attention_heads)]
        heads: dict[int, list[int]] = {}
        for layer, head in pairs:
            heads.setdefault(int(layer), []).append(int(head))
        return heads

    def _transcribe(self, video: VideoInfo, task: Task) -> SpeechResult:
        kept: list[Decoded] = []
        size = max(1, self.options.batch_size)
        batch: list[tuple[float, np.ndarray]] = []  # a partial batch waits for the next piece
        extra: dict[str, Any] = {}
        for offset, samples in self._chunks(video, task, extra):
            batch.append((offset, samples))
            if len(batch) == size:
                kept.extend(d for d in self.decode(batch) if d.keep())
                task.advance(sum(len(s) for _, s in batch) / SAMPLE_RATE)
                batch = []
        if batch:
            kept.extend(d for d in self.decode(batch) if d.keep())
            task.advance(sum(len(s) for _, s in batch) / SAMPLE_RATE)
        return speech_result(kept, extra)

    def transcribe_many(self, videos: Sequence[tuple[VideoInfo, Progress]],
                        reads: AudioReads | None = None,
                        ) -> Iterator[tuple[int, SpeechResult | Exception]]:
        """Every video's chunks in one batched stream (``pool``); results as videos complete.
        The audio is read from the start, in child processes (``audio_child``: a thread here
        waits for the GIL) unless ``SCENESCRIBE_AUDIO_READERS=0``; ``decode`` loads the model
        for the first batch."""
        reads = reads if reads is not None else AudioReads()
        readers = audio_readers()
        if readers == 0:
            source = teeing(lambda path: speech_chunks(path, **self._chunking()), reads.spools)
            yield from transcribe_pooled(videos, functools.partial(self._chunks, source=source),
                                         self.decode, Decoded.keep, speech_result,
                                         self.options.batch_size, reads)
            return
        paths = [str(video.path) for video, _ in videos if video.has_audio]
        with ChildReader(paths, readers, **self._chunking()) as children:
            yield from transcribe_pooled(
                videos, functools.partial(self._chunks,
                                          source=teeing(children.chunks, reads.spools)),
                self.decode, Decoded.keep, speech_result, self.options.batch_size, reads,
                cancel=children.close)

    def _chunking(self) -> dict[str, float]:
        """``speech_chunks``' arguments after the path."""
        return {"chunk_seconds": self.chunk_seconds,
                "chunk_search_seconds": self.chunk_search_seconds,
                "block_seconds": self.block_seconds, "search_seconds": self.search_seconds}

    def _chunks(self, video: VideoInfo, task: Task, extra: dict[str, Any],
                source: Callable[[str], Iterator[tuple[float, np.ndarray, bool]]] | None = None,
                ) -> Iterator[tuple[float, np.ndarray]]:
        """The chunks that reach the model; counts go to ``extra``, silent ones advance ``task``.
        ``source`` reads a path's chunks as ``speech_chunks`` (which reads them here) does."""
        extra.update(chunks=0, silent_chunks=0)
        read = (source(str(video.path)) if source is not None
                else speech_chunks(video.path, **self._chunking()))
        for offset, samples, silent in read:
            extra["chunks"] += 1
            if silent:
                extra["silent_chunks"] += 1
                task.advance(len(samples) / SAMPLE_RATE)
                continue
            yield offset, samples

    def decode(self, batch: list[tuple[float, np.ndarray]]) -> list[Decoded]:
        """Decode chunks ``(offset seconds, samples)`` as one batch."""
        # First: the load imports transformers under the process lock, maybe on another thread
        # (``reads_while_loading``); two threads importing its lazy modules at once race.
        self.load()
        import torch
        from transformers import LogitsProcessorList
        from transformers.modeling_outputs import BaseModelOutput

        model = self.model.net
        # Stage 1's components share the GPU from threads of one process; on the default stream
        # Whisper's many small decoding kernels would queue behind the taggers' and detector's.
        stream = self.model.stream
        with self._gpu_hold(), torch.inference_mode(), (
                torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
            with self._phase("encode"):
                features = self._log_mel([s for _, s in batch], model.dtype)
                encoded = model.model.encoder(features).last_hidden_state
                static = self._static()
                # The static decoder detects the language in its first step.
                langs = self._langs
                if static is not None and langs.detects:
                    languages = []  # the static decoder detects them in its first step
                elif langs.detects:
                    languages = langs.detect(model, encoded)
                else:
                    languages = langs.fixed(len(batch), self.name)
            suppress = self._suppress_mask(len(langs.prompt(None)))
            decoded: list[list[int]] | Decoding
            with self._phase("decode"):
                if static is not None:
                    decoded = static.generate(
                        encoded, [langs.prompt(lang) for lang, _ in languages]
                        or [langs.prompt(None)] * len(batch),
                        self.max_new_tokens, suppress.always, suppress.first,
                        model.generation_config.eos_token_id)
                    if not languages:
                        languages = langs.chosen(decoded)
                else:
                    kwargs: dict[str, Any] = {}
                    if langs.multilingual:
                        kwargs = {"language": [lang for lang, _ in languages],
                                  "task": "transcribe"}
                    decoded = model.generate(
                        encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                        logits_processor=LogitsProcessorList([suppress]),
                        return_timestamps=False, num_beams=max(1, self.options.beam_size),
                        do_sample=False, max_new_tokens=self.max_new_tokens, **kwargs,
                    ).cpu().tolist()
            aligned = self._align(batch, encoded, decoded, languages)
        with self._phase("words", gpu=False):  # CPU only: the GPU is the others' meanwhile
            return [self._decoded(offset, len(samples) / SAMPLE_RATE, *chunk)
                    for (offset, samples), chunk in zip(batch, aligned, strict=True)]

    def _log_mel(self, chunks: list[np.ndarray], dtype: Any) -> Any:
        """The batch's log-mel features on the model's device (``log_mel``)."""
        loaded: _Loaded = self.model
        if loaded.log_mel is None:
            loaded.log_mel = LogMel(loaded.processor.feature_extractor, self.device)
        return loaded.log_mel(chunks, dtype)

    def _gpu_hold(self) -> contextlib.AbstractContextManager[None]:
        """What a batch holds of the GPU (``gpu_share``): a share beside the other components'
        calls, or with ``SCENESCRIBE_SPEECH_EXCLUSIVE=1`` on CUDA the GPU alone. Decoding and
        alignment are chains of small dependent kernels that wait for a free SM behind the
        others' large ones: on W1 (H200, one host, back to back) speech took 5.1 s alone on the
        GPU against 17.9 s sharing it (242x against 69x real time), but the shot detector's
        calls waited out the batch and Stage 1 ended at 55.8 s against 49.8 s. Speech is off
        Stage 1's critical path, so sharing is the default; the shot detector's calls now go on
        beside an exclusive batch (not measured yet)."""
        if self.device.startswith("cuda") and env_flag("SCENESCRIBE_SPEECH_EXCLUSIVE"):
            return exclusive()
        return launching()

    def _static(self) -> StaticDecoder | None:
        """The loaded model's static decoder, or None where ``generate`` decodes."""
        if self.decoder == "generate" or self.options.beam_size > 1:
            return None
        loaded: _Loaded = self.model
        graphs = self.decoder == "graph"
        if graphs not in loaded.static:
            languages = self._langs.tokens()
            # Watched: end-of-text, no-speech, then the language tokens (``WhisperLanguages``).
            loaded.static[graphs] = StaticDecoder(
                loaded.net, graphs, self.alignment_heads(),
                [*watched_tokens(loaded.net.generation_config), *languages], languages)
        return loaded.static[graphs]

    def _suppress_mask(self, prompt_length: int) -> SuppressMask:
        """The checkpoint's token suppression as one precomputed mask (see ``_load``)."""
        loaded = self.model
        return SuppressMask(loaded.net.config.vocab_size, loaded.suppress, loaded.begin,
                            prompt_length, self.device)

    def _align(self, batch: list[tuple[float, np.ndarray]], encoded: Any,
               decoded: list[list[int]] | Decoding,
               languages: list[tuple[str | None, float | None]]) -> list[tuple[Any, ...]]:
        """Per chunk the arguments of ``_decoded`` after its offset and duration (text tokens,
        their log-probabilities, the frame each token starts at, language, no-speech
        probability, truncation), all on the CPU. ``decoded``: the static decoder's batch, or
        ``generate``'s sequences (then a teacher-forced pass scores them: ``token_scores``)."""
        model = self.model.net
        config = model.generation_config
        eot = config.eos_token_id
        generated = decoded.tokens if isinstance(decoded, Decoding) else decoded
        texts = [text_tokens(seq, eot) for seq in generated]
        truncated = [len(t) >= self.max_new_tokens for t in texts]
        prompts = [self._langs.prompt(lang) for lang, _ in languages]
        # The positions whose next token is a text token or the final end-of-text.
        rows = [range(len(p) - 1, len(p) + len(t)) for p, t in zip(prompts, texts, strict=True)]
        frames = [min(encoded.shape[1], -(-len(s) // SAMPLES_PER_FRAME)) for _, s in batch]
        starts: list[np.ndarray | None] = [None] * len(batch)
        with self._phase("align"):
            if isinstance(decoded, Decoding):
                scores = decoded_scores(decoded, rows)
            else:
                scores = forced_scores(
                    model, self.alignment_heads(), encoded,
                    [p + t + [eot] for p, t in zip(prompts, texts, strict=True)], rows,
                    watched_tokens(config)[NO_SPEECH], eot)
            spoken = [b for b, t in enumerate(texts) if t]  # the others have no words to time
            matrices = scores.attention.matrices(spoken, [rows[b] for b in spoken],
                                                 [frames[b] for b in spoken])
        with self._phase("dtw", gpu=False):
            # The whole batch at once (in a child process when it is large: ``dtw_child``).
            for b, found in zip(spoken, token_frames_apart(matrices), strict=True):
                starts[b] = found
        return [(texts[b], scores.next_lp[b], starts[b], languages[b],
                 float(scores.no_speech[b]), truncated[b]) for b in range(len(batch))]

    def _decoded(self, offset: float, duration: float, text: list[int], token_lp: np.ndarray,
                 starts: np.ndarray | None,
                 language: tuple[str | None, float | None],
                 no_speech: float, truncated: bool) -> Decoded:
        tokenizer = self.model.processor.tokenizer
        timed = align_words(text, np.exp(token_lp[:-1]), starts,
                            lambda t: tokenizer.decode(t), language[0])
        words = []
        for w in timed:
            start = offset + min(w.start, duration)
            words.append(Word(start, max(start, offset + min(w.end, duration)), w.text,
                              w.probability))
        return Decoded(words, tokenizer.decode(text), language[0], language[1], no_speech,
                       float(token_lp.sum() / len(token_lp)), truncated)
