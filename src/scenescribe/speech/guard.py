"""The speech guard shared by every speech backend: which decoded text to keep, and which
language the file speaks.

Whisper invents text on silence, music and noise, and loops on itself. A decoded span is
dropped when Whisper's own no-speech test says so (no-speech probability > 0.6 with mean token
log-probability < -1), when its mean log-probability is below a floor (for decoders that no VAD
protects), when its own text compresses like a repetition loop (gzip ratio > 2.4), or when it is
a stock phrase ("you", "thanks for watching", "[Music]") decoded without confidence.

Real speech repeats itself across a 30 s window: tiny.en's text for ~30 s montages of GRID
sentences (a 51-word grammar) compresses at 2.1 to 2.8, so a guard that judged whole windows
threw all of their speech away. The repetition test therefore reads the text of one timestamped
segment (about a sentence: 0.65 to 0.8 for a GRID sentence), where a runaway loop still
compresses far above 2.4. A decoder without segments (transformers Whisper decodes each chunk
without timestamps) passes its whole window with ``truncated``: its repetition counts as a loop
only when the decoder also ran out of tokens, as Whisper's loops do.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
# Without a VAD, music reaches the decoder; tiny.en then writes fluent text at a mean token
# log-probability of -2 to -4.5 (Big Buck Bunny), where real speech, GRID's odd grammar
# included, decodes at -0.15 to -0.5.
LOG_PROB_FLOOR = -1.5
COMPRESSION_RATIO_THRESHOLD = 2.4

# Phrases Whisper is known to invent on silence, music and noise (from its subtitle training
# data). They are dropped only when the decoder itself was unsure; see ``is_hallucination``.
_HALLUCINATIONS = frozenset({
    "you", "thank you", "thanks", "thank you very much", "thanks for watching",
    "thank you for watching", "thank you so much for watching", "please subscribe",
    "subscribe", "like and subscribe", "bye", "so", "okay", "oh", "uh", "um", "hmm",
    "subtitles by the amaraorg community", "i'm sorry", "the end",
})
_NON_WORD = re.compile(r"[^\w\s']+")
# "[Music]", "(upbeat music)", "♪♪": annotations of non-speech, never spoken words.
_ANNOTATION = re.compile(r"^\s*(\[[^\]]*\]|\([^)]*\)|[♪♫#*\s]+)\s*$")


def normalise(text: str) -> str:
    """Lower case, punctuation removed, spaces collapsed."""
    return " ".join(_NON_WORD.sub("", text.lower()).split())


def is_annotation(text: str) -> bool:
    """True for bracketed non-speech labels such as ``[Music]`` or ``(applause)``."""
    return bool(_ANNOTATION.match(text))


def is_hallucination(text: str, avg_logprob: float, no_speech_prob: float) -> bool:
    """A stock phrase decoded with low confidence or a high no-speech probability."""
    unsure = avg_logprob < -0.7 or no_speech_prob > 0.3
    return unsure and (normalise(text) in _HALLUCINATIONS or is_annotation(text))


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: UTF-8 length over gzip (zlib) length."""
    data = text.strip().encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass(frozen=True, slots=True)
class SpeechGuard:
    """Keeps decoded spans that are speech; ``log_prob_floor`` is for decoders without a VAD."""

    no_speech_threshold: float = NO_SPEECH_THRESHOLD
    log_prob_threshold: float = LOG_PROB_THRESHOLD
    compression_ratio_threshold: float = COMPRESSION_RATIO_THRESHOLD
    log_prob_floor: float | None = None

    def reason(self, text: str, avg_logprob: float, no_speech_prob: float,
               truncated: bool | None = None) -> str | None:
        """Why the span ``text`` is not speech, or None to keep it.

        ``text`` is one segment's own text; its scores may be its window's, as faster-whisper
        and the API report them. For a whole window's text, ``truncated`` says whether the
        decoder stopped at its token limit rather than at end-of-text.
        """
        if not normalise(text) and not is_annotation(text):
            return "empty"
        if no_speech_prob > self.no_speech_threshold and avg_logprob < self.log_prob_threshold:
            return "no speech"
        if self.log_prob_floor is not None and avg_logprob < self.log_prob_floor:
            return "low log-probability"
        if compression_ratio(text) > self.compression_ratio_threshold and truncated is not False:
            return "repetition loop"
        if is_hallucination(text, avg_logprob, no_speech_prob):
            return "stock phrase"
        return None

    def keep(self, text: str, avg_logprob: float, no_speech_prob: float,
             truncated: bool | None = None) -> bool:
        return self.reason(text, avg_logprob, no_speech_prob, truncated) is None


@dataclass(slots=True)
class LanguageVote:
    """The language heard longest, and its duration-weighted probability.

    Each backend adds the seconds of speech it kept per decoded piece (with the decoder's
    language probability when it has one); pieces with no kept words must not vote.
    """

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    weighted: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    unknown: set[str] = field(default_factory=set)

    def add(self, language: str | None, seconds: float, probability: float | None = None) -> None:
        if not language:
            return
        seconds = max(seconds, 1e-3)  # a single short word still counts
        self.seconds[language] += seconds
        if probability is None:
            self.unknown.add(language)
        else:
            self.weighted[language] += probability * seconds

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def result(self) -> tuple[str | None, float | None]:
        """``(language, probability)``; the probability is None when any vote lacked one."""
        if not self.seconds:
            return None, None
        language = max(self.seconds, key=lambda k: self.seconds[k])
        if language in self.unknown:
            return language, None
        return language, self.weighted[language] / self.seconds[language]
