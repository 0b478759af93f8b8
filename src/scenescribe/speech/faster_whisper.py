"""Whisper on CTranslate2 (faster-whisper): the CPU default.

The whole file is transcribed once with word timestamps. Audio comes from ``scenescribe.media``
in long pieces cut at quiet points (``chunking.stream_pieces``), so memory stays flat for
hours of video; each piece's word times are shifted onto the video clock.

With ``batch_size > 1`` and VAD on, pieces go through faster-whisper's
``BatchedInferencePipeline``: Silero VAD packs speech into 30 s windows decoded as a batch, with
timestamps (the pipeline's default is without), so each window comes back as sentence-sized
segments as in the sequential decoder. Untimestamped, a window was one segment: on ~30 s
montages of the GRID clips tiny.en stopped after the first sentence of some packed windows, and
the guard judged the whole window's text, whose gzip ratio real repetitive speech pushes past
2.4, so whole windows of speech were dropped (``benchmarks/bench_speech.py --random 10``:
pooled montage WER 0.52 before, 0.14 now, plain faster-whisper 0.15). Without VAD the
sequential decoder runs (the batched one needs VAD to find windows in audio longer than 30 s).

Hallucination guard: Silero VAD drops music and silence before decoding (Big Buck Bunny's 30 s
of music and effects keep no speech at all); decoding runs with
``condition_on_previous_text=False`` (no runaway repetition loops); then the shared
``guard.SpeechGuard`` judges each segment's own text with the window's scores (faster-whisper
reports the window's compression ratio on every segment, so it is recomputed per segment).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from scenescribe.media import SAMPLE_RATE
from scenescribe.progress import Task
from scenescribe.records import VideoInfo, Word
from scenescribe.speech.base import SpeechRecognizer, SpeechResult
from scenescribe.speech.chunking import stream_pieces
from scenescribe.speech.guard import (
    COMPRESSION_RATIO_THRESHOLD,
    LOG_PROB_THRESHOLD,
    NO_SPEECH_THRESHOLD,
    LanguageVote,
    SpeechGuard,
)

log = logging.getLogger("scenescribe.speech")

GUARD = SpeechGuard()  # Silero VAD runs first, so no log-probability floor is needed


def compute_type_for(option: str, device: str) -> str:
    """``default`` is float32 on CPU (tiny.en garbles words in int8) and float16 on CUDA."""
    if option != "default":
        return option
    return "float16" if device.startswith("cuda") else "float32"


def split_device(device: str) -> tuple[str, int]:
    """``cuda:1`` -> ``("cuda", 1)``; ``cpu`` -> ``("cpu", 0)``."""
    kind, _, index = device.partition(":")
    return kind, int(index) if index else 0


def cpu_threads() -> int:
    """Half the cores, 1 to 4 (0, which defers to ``OMP_NUM_THREADS``, is used when it is set).

    CTranslate2's OpenMP threads spin while they wait for each other, so oversubscribed cores
    are ruinous: on 2 cores shared with other busy processes (load 8.5) the 30 s synthetic clip
    took 9 to 39 s with 2 threads and 2.0 to 2.4 s with 1 thread. Other stages and processes
    usually want the rest of the machine; CTranslate2's own default is 4.
    """
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def segment_words(segment: Any, offset: float) -> list[Word]:
    """The segment's words shifted by ``offset`` seconds, with times clamped to be valid."""
    words = []
    for w in segment.words or ():
        start = max(0.0, float(w.start) + offset)
        words.append(Word(start, max(start, float(w.end) + offset), str(w.word),
                          float(w.probability)))
    return words


class FasterWhisperRecognizer(SpeechRecognizer):
    """faster-whisper (CTranslate2) Whisper with word timestamps and Silero VAD."""

    block_seconds = 600.0  # audio held at once; pieces are cut at quiet points near the end
    search_seconds = 30.0  # how far back from a piece's end to look for a quiet cut
    window_seconds = 30  # speech packed into one batched window (faster-whisper's chunk_length)

    def _load(self) -> Any:
        from faster_whisper import WhisperModel

        device, index = split_device(self.device)
        compute_type = compute_type_for(self.options.compute_type, device)
        threads = 0 if os.environ.get("OMP_NUM_THREADS") else cpu_threads()
        log.info("loading %s on %s (%s)", self.weights(), self.device, compute_type)
        return WhisperModel(str(self.weights()), device=device, device_index=index,
                            compute_type=compute_type, cpu_threads=threads)

    def unload(self) -> None:
        # CTranslate2 frees its memory with the model; torch (the base's CUDA cache) may be absent.
        self.model = None

    @property
    def batched(self) -> bool:
        return self.options.batch_size > 1 and self.options.vad

    def facts(self) -> dict[str, Any]:
        device = split_device(self.device)[0]
        return {**super().facts(), "engine": "faster-whisper",
                "compute_type": compute_type_for(self.options.compute_type, device),
                "mode": "batched" if self.batched else "sequential"}

    def _transcribe(self, video: VideoInfo, task: Task) -> SpeechResult:
        words: list[Word] = []
        vote = LanguageVote()
        pieces = 0
        for start, samples in stream_pieces(video.path, self.block_seconds, self.search_seconds):
            pieces += 1
            piece_words, info = self._transcribe_piece(samples, start)
            words.extend(piece_words)
            if piece_words:  # languages count only where something was said
                vote.add(info.language, info.duration_after_vad, info.language_probability)
            task.advance(len(samples) / SAMPLE_RATE)
        words.sort(key=lambda w: w.start)
        if not words:
            return SpeechResult(extra={"pieces": pieces, "speech_seconds": 0.0})
        language, probability = vote.result()
        return SpeechResult(tuple(words), language, probability,
                            extra={"pieces": pieces,
                                   "speech_seconds": round(vote.total_seconds, 3)})

    def _transcribe_piece(self, samples: np.ndarray, offset: float) -> tuple[list[Word], Any]:
        from faster_whisper import BatchedInferencePipeline

        kwargs: dict[str, Any] = dict(
            language=self.options.language, beam_size=self.options.beam_size,
            word_timestamps=True, vad_filter=self.options.vad,
            condition_on_previous_text=False, no_speech_threshold=NO_SPEECH_THRESHOLD,
            # Greedy only, as the batched pipeline decodes: the fallback to sampling is
            # triggered by the whole window's compression ratio, which real repetitive speech
            # exceeds; it then wrote "Layer-ed with P-9" for "Lay red with P9", differently
            # on each run. Loops are the guard's to drop, segment by segment.
            temperature=0.0,
            log_prob_threshold=LOG_PROB_THRESHOLD,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD)
        if self.batched:
            # With timestamps, a window decodes into sentence-sized segments as in the
            # sequential decoder; without them (the pipeline's default) tiny.en stopped after
            # the first of eight sentences in a packed 24 s window, and the guard could only
            # judge the whole window.
            pipeline = BatchedInferencePipeline(self.model)
            segments, info = pipeline.transcribe(samples, batch_size=self.options.batch_size,
                                                 without_timestamps=False,
                                                 chunk_length=self.window_seconds, **kwargs)
        else:
            segments, info = self.model.transcribe(samples, **kwargs)
        words: list[Word] = []
        for segment in segments:
            # faster-whisper's scores are the whole window's; the text is the segment's own.
            why = GUARD.reason(segment.text, segment.avg_logprob, segment.no_speech_prob)
            if why is None:
                words.extend(segment_words(segment, offset))
            else:
                log.debug("dropped segment %.2f-%.2f %r (%s; no-speech %.2f, log-prob %.2f)",
                          segment.start + offset, segment.end + offset, segment.text, why,
                          segment.no_speech_prob, segment.avg_logprob)
        return words, info
