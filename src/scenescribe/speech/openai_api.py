"""Speech through an OpenAI-compatible ``/audio/transcriptions`` endpoint (OpenAI, Azure, local
servers such as speaches or vLLM).

The reference pipeline called a remote Whisper once per scene, which was 87% of its Stage 1
time. Here the file is cut into pieces of at most 10 minutes at quiet points (one request per
piece, 16 kHz 16-bit WAV encoded in memory: 19 MB for 10 minutes, under OpenAI's 25 MB limit),
silent pieces are never sent, ``api_concurrency`` requests run at once, and 429, 5xx, timeouts
and dropped connections are retried with exponential backoff (honouring ``Retry-After``).
Words come from ``response_format=verbose_json`` with ``timestamp_granularities[]=word`` and are
shifted by their piece's start onto the video clock.

Configuration: the key from ``OPENAI_API_KEY`` (or ``SCENESCRIBE_API_KEY``); the base URL from
``speech.api_base`` or ``OPENAI_BASE_URL`` (e.g. ``https://api.openai.com/v1``; a URL that
already ends in ``/audio/transcriptions``, such as an Azure deployment URL with its
``api-version`` query, is used as given); the model from ``speech.weights`` (default
``whisper-1``, the OpenAI model that returns word times).
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scenescribe.backend import Backend
from scenescribe.errors import ConfigError, redact_url
from scenescribe.media import SAMPLE_RATE
from scenescribe.openai_client import BASE_ENV, KEY_ENV, ApiError, OpenAIClient, api_key, base_url
from scenescribe.progress import Task
from scenescribe.records import VideoInfo, Word
from scenescribe.speech.base import SpeechRecognizer, SpeechResult
from scenescribe.speech.chunking import is_silent, stream_pieces
from scenescribe.speech.guard import LanguageVote, SpeechGuard
from scenescribe.wav import wav_bytes

log = logging.getLogger("scenescribe.speech")

DEFAULT_MODEL = "whisper-1"
# verbose_json names the language in English ("english"); the common ones map to ISO codes.
_LANGUAGE_CODES = {
    "english": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it",
    "portuguese": "pt", "dutch": "nl", "russian": "ru", "chinese": "zh", "japanese": "ja",
    "korean": "ko", "arabic": "ar", "hindi": "hi", "turkish": "tr", "polish": "pl",
    "swedish": "sv", "ukrainian": "uk", "vietnamese": "vi", "indonesian": "id",
}


def endpoint_url(base: str) -> str:
    base = base.rstrip("/")
    path = urlsplit(base).path.rstrip("/")
    return base if path.endswith("/audio/transcriptions") else f"{base}/audio/transcriptions"


def language_code(name: str | None) -> str | None:
    if not name:
        return None
    return _LANGUAGE_CODES.get(name.lower(), name.lower())


def response_words(payload: dict[str, Any], offset: float) -> list[Word]:
    """Words of one verbose_json response on the video clock, minus those inside segments
    that Whisper's own scores mark as silence or a stock hallucination."""
    dropped = [(float(s.get("start", 0.0)), float(s.get("end", 0.0)))
               for s in payload.get("segments") or () if not _keep_segment(s)]
    words = []
    for w in payload.get("words") or ():
        start, end = float(w["start"]), float(w["end"])
        middle = (start + end) / 2
        if any(a <= middle < b for a, b in dropped):
            continue
        begin = max(0.0, start + offset)
        words.append(Word(begin, max(begin, end + offset), str(w["word"])))
    return words


def _keep_segment(segment: dict[str, Any]) -> bool:
    """The shared speech guard on one verbose_json segment (its own text and scores)."""
    return _GUARD.keep(str(segment.get("text", "")), float(segment.get("avg_logprob", 0.0)),
                       float(segment.get("no_speech_prob", 0.0)))


_GUARD = SpeechGuard()


class OpenAITranscriptionRecognizer(SpeechRecognizer):
    """Remote Whisper over HTTP; nothing is loaded locally."""

    block_seconds = 600.0  # one request per piece of at most this length
    search_seconds = 30.0
    max_retries = 5
    backoff_seconds = 1.0  # first retry delay; doubles each attempt, with jitter
    max_backoff_seconds = 60.0
    timeout_seconds = 300.0

    def __init__(self, entry: Any, options: Any, device: str = "cpu",
                 model_dir: Path | None = None) -> None:
        Backend.__init__(self, entry, options, device, model_dir)
        self.api_key = api_key()
        base = base_url(options.api_base)
        if not self.api_key:
            raise ConfigError(f"{entry.name}: no API key; set {KEY_ENV[0]} (or {KEY_ENV[1]})")
        if not base:
            raise ConfigError(f"{entry.name}: no endpoint; set speech.api_base (--config) or "
                              f"{BASE_ENV}, e.g. https://api.openai.com/v1")
        self.url = endpoint_url(base)
        self.model_name = options.api_model or options.weights or DEFAULT_MODEL

    def weights(self) -> str:
        return self.model_name

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "engine": "openai-api", "model": self.model_name,
                "endpoint": redact_url(self.url)}

    def _load(self) -> OpenAIClient:
        assert self.api_key is not None
        return OpenAIClient(self.url, self.api_key, concurrency=self.options.api_concurrency,
                            timeout_s=self.timeout_seconds, max_attempts=self.max_retries + 1,
                            backoff_s=self.backoff_seconds,
                            max_backoff_s=self.max_backoff_seconds)

    def unload(self) -> None:
        if self.model is not None:
            self.model.close()
        self.model = None

    def _transcribe(self, video: VideoInfo, task: Task) -> SpeechResult:
        words: list[Word] = []
        languages = LanguageVote()
        limit = max(1, self.options.api_concurrency)
        pending: deque[tuple[float, Future]] = deque()
        sent = 0
        pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="transcribe")
        try:
            # At most `limit` pieces wait in memory: reading pauses while they are in flight.
            for start, samples in stream_pieces(video.path, self.block_seconds,
                                                self.search_seconds):
                if len(pending) >= limit:
                    self._collect(pending.popleft(), words, languages, task)
                if is_silent(samples):
                    task.advance(len(samples) / SAMPLE_RATE)
                    continue
                sent += 1
                pending.append((len(samples) / SAMPLE_RATE,
                                pool.submit(self._request, wav_bytes(samples), start)))
            while pending:
                self._collect(pending.popleft(), words, languages, task)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        words.sort(key=lambda w: w.start)
        language = languages.result()[0] if words else None
        return SpeechResult(tuple(words), language, None, extra={"requests": sent})

    def _collect(self, item: tuple[float, Future], words: list[Word],
                 languages: LanguageVote, task: Any) -> None:
        seconds, future = item
        piece_words, language = future.result()
        words.extend(piece_words)
        if piece_words:  # pieces with no kept words must not vote
            languages.add(language, seconds)
        task.advance(seconds)

    def _request(self, wav: bytes, offset: float) -> tuple[list[Word], str | None]:
        """POST one piece (the client retries transient failures); its words and language."""
        data: dict[str, str | list[str]] = {
            "model": self.model_name, "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"]}
        if self.options.language:
            data["language"] = self.options.language
        try:
            response = self.model.request("POST", self.url, data=data,
                                          files={"file": ("audio.wav", wav, "audio/wav")})
        except ApiError as exc:
            if exc.status == 404:
                raise ConfigError(f"{exc}: endpoint or model {self.model_name!r} not "
                                  f"found") from None
            raise
        try:
            payload = response.json()
            words = response_words(payload, offset)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ApiError(f"{self.model.shown(self.url)}: unexpected response "
                           f"({type(exc).__name__})") from None
        return words, language_code(payload.get("language"))
