"""The OpenAI-compatible chat captioner against a local HTTP server on 127.0.0.1.

The server answers each scene with a caption naming it, can refuse a scene's first requests with
429 or fail it for good with 503, and counts requests in flight, so the tests check what the
client sends (auth header, model, frames as base64 JPEG parts, instruction) and how it behaves
(retries, concurrency bound, errors recorded per scene, configuration errors).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scenescribe import registry
from scenescribe.captions.base import CaptionRequest
from scenescribe.captions.openai_chat import OpenAIChatCaptioner
from scenescribe.errors import ConfigError
from scenescribe.options import CaptionOptions
from scenescribe.progress import NullProgress

pytest.importorskip("httpx")


class FakeServer:
    """State shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict[str, Any]] = []
        self.refuse_first: dict[int, int] = {}  # scene -> 429s still to send
        self.always_fail: set[int] = set()
        self.status_for_all: int | None = None
        self.delay_s = 0.05
        self.slow_first: dict[int, float] = {}  # scene -> seconds its first answer takes


def make_handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
                  ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"data": [{"id": "served-vlm"}, {"id": "other"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = body["messages"][0]["content"][-1]["text"]
            scene = int(re.search(r"scene-(\d+)", text).group(1))
            with state.lock:
                state.requests.append({"auth": self.headers.get("Authorization"),
                                       "path": self.path, "body": body, "scene": scene})
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                refuse = state.refuse_first.get(scene, 0)
                if refuse:
                    state.refuse_first[scene] = refuse - 1
            time.sleep(state.slow_first.pop(scene, state.delay_s))
            with state.lock:
                state.in_flight -= 1
            if state.status_for_all:
                self._send(state.status_for_all, {"error": "nope"})
            elif refuse:
                self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
            elif scene in state.always_fail:
                self._send(503, {"error": "overloaded"})
            else:
                self._send(200, {"choices": [{"message": {"content": f" caption of scene-{scene} "}}],
                                 "usage": {"completion_tokens": 10 + scene}})

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out closed its socket: expected in the timeout test


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeServer, str]]:
    state = FakeServer()
    httpd = QuietServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(OpenAIChatCaptioner, "retry_base_s", 0.01)
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def scenes(tmp_path: Path) -> list[CaptionRequest]:
    from PIL import Image

    requests = []
    for i in range(6):
        paths = []
        for j in range(2):
            path = tmp_path / f"s{i}_{j}.jpg"
            Image.new("RGB", (32 + 8 * j, 24), (40 * i, 100 * j, 50)).save(path)
            paths.append(str(path))
        requests.append(CaptionRequest(i, tuple(paths), context=f"scene-{i}"))
    return requests


def captioner(base: str | None, **options: Any) -> Any:
    opts = CaptionOptions(models=("openai-chat",), api_base=base, max_new_tokens=64, **options)
    return registry.create("openai-chat", "captioner", options=opts, device="cpu")


def test_every_scene_captioned_with_retries_and_bounded_concurrency(
        server: tuple[FakeServer, str], scenes: list[CaptionRequest]) -> None:
    state, base = server
    state.refuse_first = {1: 1, 4: 2}
    out = dict(captioner(base, api_concurrency=2, weights="my-model").caption(scenes, NullProgress()))
    assert {i: c.text for i, c in out.items()} == {i: f"caption of scene-{i}" for i in range(6)}
    assert {i: c.new_tokens for i, c in out.items()} == {i: 10 + i for i in range(6)}
    assert all(c.error is None for c in out.values())
    assert len(state.requests) == 6 + 1 + 2  # one retry for scene 1, two for scene 4
    assert state.max_in_flight == 2  # used, and never exceeded
    for seen in state.requests:
        assert seen["auth"] == "Bearer test-key" and seen["path"] == "/v1/chat/completions"
        body = seen["body"]
        assert (body["model"], body["max_tokens"], body["temperature"]) == ("my-model", 64, 0)
        parts = body["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
        frame = scenes[seen["scene"]].frames[0]
        url = parts[0]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == Path(frame).read_bytes()
        assert parts[2]["text"].startswith(f"scene-{seen['scene']}\n\nDescribe this video scene")


def test_a_scene_that_keeps_failing_gets_an_error_and_the_run_goes_on(
        server: tuple[FakeServer, str], scenes: list[CaptionRequest],
        monkeypatch: pytest.MonkeyPatch) -> None:
    state, base = server
    monkeypatch.setattr(OpenAIChatCaptioner, "max_attempts", 3)
    state.always_fail = {3}
    out = dict(captioner(base, weights="m").caption(scenes, NullProgress()))
    assert out[3].text == "" and "503" in (out[3].error or "")
    assert all(out[i].text == f"caption of scene-{i}" for i in range(6) if i != 3)
    assert sum(r["scene"] == 3 for r in state.requests) == 3


def test_timeouts_are_retried(server: tuple[FakeServer, str], scenes: list[CaptionRequest],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    state, base = server
    monkeypatch.setattr(OpenAIChatCaptioner, "timeout_s", 0.5)
    state.slow_first = {0: 2.0}
    out = dict(captioner(base, weights="m").caption(scenes[:2], NullProgress()))
    assert out[0].text == "caption of scene-0" and out[0].error is None
    assert sum(r["scene"] == 0 for r in state.requests) >= 2


def test_model_defaults_to_the_servers_first(server: tuple[FakeServer, str],
                                             scenes: list[CaptionRequest]) -> None:
    state, base = server
    c = captioner(base)
    list(c.caption(scenes[:1], NullProgress()))
    assert state.requests[0]["body"]["model"] == "served-vlm"
    assert c.facts()["served_model"] == "served-vlm"


def test_configuration_errors(server: tuple[FakeServer, str], scenes: list[CaptionRequest],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    state, base = server
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        captioner(None).load()
    monkeypatch.setenv("OPENAI_BASE_URL", base)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("SCENESCRIBE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="API key"):
        captioner(None).load()
    monkeypatch.setenv("SCENESCRIBE_API_KEY", "other-key")
    state.status_for_all = 401
    with pytest.raises(ConfigError, match="refused the API key"):
        list(captioner(None, weights="m").caption(scenes[:1], NullProgress()))
    assert state.requests[0]["auth"] == "Bearer other-key"
