"""Weights that would run code, secrets in URLs and servers' replies (issue 11, item 11)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import invoke, make_video

# --- 11: weights that would run code; secrets in URLs and messages -------------------------------

class _Payload:
    """Pickles as a call that creates a file: proof of code execution if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "code ran"))


def crafted_weights(tmp_path: Path) -> tuple[Path, Path]:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "train_args": {}}, weights)
    assert not marker.exists()
    return weights, marker


def test_crafted_yolo_weights_are_refused_without_running(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    pytest.importorskip("lap")
    from scenescribe import registry
    from scenescribe.errors import ModelNotFoundError
    from scenescribe.options import ObjectOptions

    weights, marker = crafted_weights(tmp_path)
    backend = registry.create("yolov8n", "objects", options=ObjectOptions(weights=str(weights)),
                              device="cpu")
    with pytest.raises(ModelNotFoundError) as refused:
        backend.load()
    assert not marker.exists(), "the pickle's code ran"
    assert re.search(r"evil\.pt: refused.*\(pathlib\.Path", str(refused.value))


def test_crafted_yolo_weights_through_the_cli(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    pytest.importorskip("lap")
    weights, marker = crafted_weights(tmp_path)
    video = make_video(tmp_path / "clip.mp4")
    config = tmp_path / "c.toml"
    config.write_text(f"[objects]\nweights = {str(weights)!r}\n")
    code, _, stderr = invoke("run", str(video), "--out", str(tmp_path / "out"), "--config",
                             str(config), "--stages", "objects")
    assert not marker.exists(), "the pickle's code ran"
    assert code == 1 and "Traceback" not in stderr
    assert "refused" in stderr and str(weights) in stderr


def test_real_yolo_weights_still_load_safely() -> None:
    pytest.importorskip("ultralytics")
    from conftest import MODELS
    from scenescribe.objects.yolo_weights import load_checkpoint

    ckpt = load_checkpoint(MODELS / "yolo" / "yolov8n.pt")
    model = ckpt.get("ema") or ckpt["model"]
    assert len(model.names) == 80 and model.names[0] == "person"


SECRET_KEY = "sk-test-5ecret-key-0123456789"
URL_SECRET = "p4ssw0rd-in-url"


def test_credentials_in_api_base_never_reach_run_json(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    config = tmp_path / "c.toml"
    config.write_text(f'[speech]\napi_base = "https://me:{URL_SECRET}@asr.invalid/v1"\n'
                      f'[captions]\napi_base = "https://me:{URL_SECRET}@vlm.invalid/v1?api-key=k3y"\n')
    code, _, stderr = invoke("run", str(video), "--out", str(tmp_path / "out"), "--config",
                             str(config), "--stages", "none")
    assert code == 0, stderr
    facts = (tmp_path / "out" / "clip" / "run.json").read_text()
    assert URL_SECRET not in facts and "k3y" not in facts
    options = json.loads(facts)["options"]
    assert options["speech"]["api_base"] == "https://***@asr.invalid/v1"
    assert options["captions"]["api_base"] == "https://***@vlm.invalid/v1?api-key=***"


class _Server:
    """A local OpenAI-compatible server whose answers the test sets; counts requests in flight."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status, self.body, self.delay = 200, b"{}", 0.0
        self.in_flight = self.max_in_flight = self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                import time

                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay)
                with lock:
                    server.in_flight -= 1
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(server.body)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.base = f"http://me:{URL_SECRET}@127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> object:
    pytest.importorskip("httpx")
    for var in ("OPENAI_BASE_URL", "SCENESCRIBE_API_KEY", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    s = _Server()
    yield s
    s.close()


LONG_REPLY = json.dumps({"error": {"type": "invalid_request_error", "message": (
    "Incorrect API key provided: " + SECRET_KEY + " \x1b[31m" + "blah " * 60)}}).encode()


def assert_clean(message: str) -> None:
    assert SECRET_KEY not in message and URL_SECRET not in message, message
    assert "blah " * 17 not in message, "more than ~80 characters of the reply echoed"
    assert "\x1b" not in message


def caption_request(tmp_path: Path) -> object:
    from PIL import Image

    from scenescribe.captions.base import CaptionRequest

    frame = tmp_path / "f.jpg"
    Image.new("RGB", (16, 16)).save(frame)
    return CaptionRequest(0, (str(frame),), context="")


def chat_captioner(base: str, **options: object) -> object:
    from scenescribe import registry
    from scenescribe.options import CaptionOptions

    return registry.create("openai-chat", "captioner", options=CaptionOptions(
        models=("openai-chat",), api_base=base, weights="m", **options), device="cpu")


def test_caption_errors_are_short_and_hold_no_secret(server: _Server, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from scenescribe.errors import ConfigError
    from scenescribe.progress import NullProgress

    caplog.set_level("DEBUG")  # httpx logs each request's URL at INFO
    captioner = chat_captioner(server.base)
    assert URL_SECRET not in json.dumps(captioner.facts() | {"x": 0}, default=str)
    server.status, server.body = 400, LONG_REPLY
    (_, caption), = captioner.caption([caption_request(tmp_path)], NullProgress())
    assert caption.text == "" and "HTTP 400 (invalid_request_error: Incorrect API key" in caption.error
    assert_clean(caption.error)
    assert URL_SECRET not in json.dumps(captioner.facts(), default=str)
    server.status = 401
    with pytest.raises(ConfigError) as refused:
        list(captioner.caption([caption_request(tmp_path)], NullProgress()))
    assert "refused the API key" in str(refused.value) and "HTTP 401" in str(refused.value)
    assert_clean(str(refused.value))
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert_clean(record.getMessage())


def test_speech_errors_are_short_and_hold_no_secret(server: _Server, tmp_path: Path) -> None:
    from scenescribe import registry
    from scenescribe.errors import ConfigError, StageError
    from scenescribe.media import probe
    from scenescribe.options import SpeechOptions
    from scenescribe.progress import NullProgress

    clip = tmp_path / "tone.wav"
    import wave

    with wave.open(str(clip), "wb") as w:  # 2 s of a loud tone: not silence, so it is sent
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        t = np.arange(32000) / 16000
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 20000).astype("<i2").tobytes())
    recognizer = registry.create("openai-transcribe", "speech",
                                 options=SpeechOptions(api_base=server.base), device="cpu")
    recognizer.max_retries, recognizer.backoff_seconds = 1, 0.01
    assert URL_SECRET not in json.dumps(recognizer.facts(), default=str)
    for status, error in ((500, StageError), (400, StageError), (403, ConfigError)):
        server.status, server.body = status, LONG_REPLY
        with pytest.raises(error) as failed:
            recognizer.transcribe(probe(clip), NullProgress())
        assert f"HTTP {status}" in str(failed.value)
        assert_clean(str(failed.value))
        recognizer.unload()


def test_one_shared_client_bounds_requests_in_flight(server: _Server, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from scenescribe.openai_client import OpenAIClient

    server.delay, server.body = 0.1, b'{"ok": true}'
    client = OpenAIClient(server.base, SECRET_KEY, concurrency=2, timeout_s=5)
    with ThreadPoolExecutor(8) as pool:  # more callers than slots
        answers = list(pool.map(lambda _: client.request("GET", f"{client.base}/x").json(),
                                range(8)))
    client.close()
    assert answers == [{"ok": True}] * 8 and server.max_in_flight == 2
    captioner = chat_captioner(server.base, api_concurrency=3)
    captioner.load()
    assert isinstance(captioner.model, OpenAIClient)
    captioner.unload()


def test_yolo_weights_of_other_formats(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from conftest import MODELS
    from scenescribe.objects.yolo_weights import UnsafeCheckpointError, checked_loading

    with checked_loading(MODELS / "yolo" / "yolov8n_int8.tflite"):  # no pickle inside: as given
        pass
    weights, marker = crafted_weights(tmp_path)
    renamed = weights.rename(tmp_path / "evil.pth")  # a pickle under another name
    with (pytest.raises(UnsafeCheckpointError, match=r"evil\.pth: expected a \.pt checkpoint"),
          checked_loading(renamed)):
        pass
    assert not marker.exists()


