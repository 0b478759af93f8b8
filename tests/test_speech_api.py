"""The OpenAI-compatible transcription backend against a local imitation of the endpoint."""

from __future__ import annotations

import email
import io
import json
import threading
import time
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import media
from scenescribe import registry
from scenescribe.errors import ConfigError, StageError
from scenescribe.media import SAMPLE_RATE, probe
from scenescribe.options import SpeechOptions
from scenescribe.progress import NullProgress
from scenescribe.speech.chunking import stream_pieces
from scenescribe.speech.openai_api import endpoint_url, response_words

KEY = "test-key"
SYNTHETIC = "synthetic/synthetic_cuts_speech.mp4"


class FakeEndpoint:
    """Counts requests and how many run at once; fails the first ones with the given codes."""

    def __init__(self, failures: list[int], delay: float = 0.3) -> None:
        self.failures = failures
        self.delay = delay
        self.lock = threading.Lock()
        self.active = self.max_active = self.requests = 0
        self.fields: list[dict[str, list[str]]] = []

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, dict]:
        with self.lock:
            self.requests += 1
            if headers.get("Authorization") != f"Bearer {KEY}":
                return 401, {}, {"error": {"message": "bad key"}}
            if self.failures:
                code = self.failures.pop(0)
                return code, ({"Retry-After": "0"} if code == 429 else {}), {"error": {}}
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)  # long enough for the client's other requests to overlap
            fields, wav = parse_form(headers["Content-Type"], body)
            with self.lock:
                self.fields.append(fields)
            with wave.open(io.BytesIO(wav)) as w:
                assert w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1
                seconds = w.getnframes() / SAMPLE_RATE
            words = [{"word": "alpha", "start": 0.5, "end": 1.0},
                     {"word": "omega", "start": seconds - 1.0, "end": seconds - 0.5}]
            segment = {"id": 0, "start": 0.0, "end": seconds, "text": " alpha omega",
                       "avg_logprob": -0.2, "no_speech_prob": 0.01}
            return 200, {}, {"text": "alpha omega", "language": "english", "duration": seconds,
                             "words": words, "segments": [segment]}
        finally:
            with self.lock:
                self.active -= 1


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, list[str]], bytes]:
    message = email.message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
                                       + body)
    fields: dict[str, list[str]] = {}
    wav = b""
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")
        if name == "file":
            wav = part.get_payload(decode=True)
        else:
            fields.setdefault(name, []).append(part.get_payload(decode=True).decode())
    return fields, wav


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FakeEndpoint]]:
    fake = FakeEndpoint(failures=[429, 503])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/v1/audio/transcriptions":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, headers, payload = fake.answer(dict(self.headers), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            for k, v in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    for var in ("SCENESCRIBE_API_KEY", "OPENAI_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", fake
    server.shutdown()
    server.server_close()


def recognizer(base: str | None, **options: object):
    r = registry.create("openai-transcribe", "speech",
                        options=SpeechOptions(api_base=base, **options), device="cpu")
    r.backoff_seconds, r.block_seconds = 0.01, 8.0  # 4 pieces of the 30 s clip
    return r


def test_pieces_are_sent_concurrently_retried_and_offset(endpoint) -> None:
    base, fake = endpoint
    r = recognizer(base, api_concurrency=2, language="en")
    result = r.transcribe(probe(media(SYNTHETIC)), NullProgress())
    pieces = [(start, len(s) / SAMPLE_RATE) for start, s in stream_pieces(media(SYNTHETIC), 8.0)]
    assert len(pieces) == 4
    expected = sorted([(s + 0.5, s + 1.0, "alpha") for s, _ in pieces]
                      + [(s + d - 1.0, s + d - 0.5, "omega") for s, d in pieces])
    got = [(w.start, w.end, w.text) for w in result.words]
    assert [g[2] for g in got] == [e[2] for e in expected]
    assert np_close([g[:2] for g in got], [e[:2] for e in expected])
    assert fake.requests == 4 + 2 and not fake.failures  # the 429 and the 503 were retried
    assert fake.max_active == 2  # concurrent, and never more than api_concurrency
    assert result.language == "en" and result.extra["requests"] == 4
    for fields in fake.fields:
        assert fields["model"] == ["whisper-1"] and fields["response_format"] == ["verbose_json"]
        assert "word" in fields["timestamp_granularities[]"] and fields["language"] == ["en"]
    r.unload()


def np_close(a: list, b: list, tol: float = 1e-3) -> bool:
    return len(a) == len(b) and all(abs(x - y) < tol for p, q in zip(a, b, strict=True)
                                    for x, y in zip(p, q, strict=True))


def test_nothing_is_sent_for_no_audio_or_silence(endpoint) -> None:
    base, fake = endpoint
    for rel in ("bad_inputs/no_audio.mp4", "bad_inputs/silent_audio.mp4"):
        result = recognizer(base).transcribe(probe(media(rel)), NullProgress())
        assert result.words == () and result.language is None
    assert fake.requests == 0


def test_missing_key_or_endpoint_is_a_config_error(endpoint, monkeypatch) -> None:
    base, _ = endpoint
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="no API key; set OPENAI_API_KEY"):
        recognizer(base)
    monkeypatch.setenv("SCENESCRIBE_API_KEY", KEY)
    assert recognizer(base).api_key == KEY
    with pytest.raises(ConfigError, match="no endpoint; set speech.api_base"):
        recognizer(None)
    monkeypatch.setenv("OPENAI_BASE_URL", base)
    assert recognizer(None).url == f"{base}/audio/transcriptions"


def test_a_refused_key_fails_clearly_without_retrying(endpoint, monkeypatch) -> None:
    base, fake = endpoint
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with pytest.raises(ConfigError, match="refused the API key"):
        recognizer(base).transcribe(probe(media(SYNTHETIC)), NullProgress())
    assert fake.requests <= 4  # one per piece in flight, none retried


def test_persistent_server_errors_give_up_after_the_retries(endpoint) -> None:
    base, fake = endpoint
    fake.failures = [503] * 20
    r = recognizer(base, api_concurrency=1)
    r.max_retries = 2
    with pytest.raises(StageError, match="giving up after 3 attempts: HTTP 503"):
        r.transcribe(probe(media(SYNTHETIC)), NullProgress())
    assert fake.requests == 3


def test_words_in_segments_scored_as_silence_or_stock_phrases_are_dropped() -> None:
    payload = {"words": [{"word": "Hello", "start": 0.2, "end": 0.6},
                         {"word": "you", "start": 5.0, "end": 5.3},
                         {"word": "Thanks", "start": 9.0, "end": 9.4}],
               "segments": [{"start": 0.0, "end": 1.0, "text": " Hello", "avg_logprob": -0.3,
                             "no_speech_prob": 0.1},
                            {"start": 4.8, "end": 5.6, "text": " you", "avg_logprob": -0.9,
                             "no_speech_prob": 0.4},
                            {"start": 8.8, "end": 9.6, "text": " Thanks", "avg_logprob": -1.4,
                             "no_speech_prob": 0.8}]}
    words = response_words(payload, offset=100.0)
    assert [(w.text, w.start) for w in words] == [("Hello", 100.2)]


def test_endpoint_urls() -> None:
    assert endpoint_url("https://api.openai.com/v1/") == \
        "https://api.openai.com/v1/audio/transcriptions"
    azure = ("https://x.openai.azure.com/openai/deployments/whisper/audio/transcriptions"
             "?api-version=2024-06-01")
    assert endpoint_url(azure) == azure
