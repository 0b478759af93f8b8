"""Captions from any OpenAI-compatible chat server (vLLM, SGLang, Ollama, a hosted API).

Each scene is one ``/chat/completions`` request whose user message holds the frames as base64
JPEG ``image_url`` parts and the caption instruction; greedy (temperature 0) with the run's
``max_new_tokens``. At most ``api_concurrency`` requests are in flight; 429, 5xx, timeouts and
dropped connections are retried with exponential backoff (``Retry-After`` honoured), and a scene
that still fails gets an error caption while the run goes on. Authentication failures stop the
run: every other scene would fail the same way.

Settings: the server from ``captions.api_base`` or ``OPENAI_BASE_URL`` (e.g.
``http://localhost:8000/v1``), the key from ``OPENAI_API_KEY`` or ``SCENESCRIBE_API_KEY``, the
served model from ``openai-chat=MODEL`` (``CaptionOptions.weights``) or else the server's first
listed model.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from scenescribe.captions.base import DEFAULT_PROMPT, Captioner, CaptionRequest
from scenescribe.errors import ConfigError, InputError
from scenescribe.progress import Progress
from scenescribe.records import Caption

log = logging.getLogger("scenescribe.captions.api")

KEY_ENV = ("OPENAI_API_KEY", "SCENESCRIBE_API_KEY")
BASE_ENV = "OPENAI_BASE_URL"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class _Retryable(Exception):
    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


class OpenAIChatCaptioner(Captioner):
    """One chat request per scene, several in flight."""

    max_attempts = 5
    retry_base_s = 1.0  # first backoff; doubles each attempt
    retry_max_s = 30.0
    timeout_s = 300.0  # a long caption on a busy server can take minutes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_url = ""
        self.served_model = ""

    def weights(self) -> Path | str:
        return self.served_model or (self.options.weights or "")

    def _load(self) -> Any:
        import httpx

        base = self.options.api_base or os.environ.get(BASE_ENV)
        if not base:
            raise ConfigError(f"{self.name}: no server: set captions.api_base or {BASE_ENV} "
                              f"(e.g. http://localhost:8000/v1)")
        key = next((os.environ[k] for k in KEY_ENV if os.environ.get(k)), None)
        if not key:
            raise ConfigError(f"{self.name}: no API key: set {' or '.join(KEY_ENV)} (any "
                              f"value for a local server without authentication)")
        self.base_url = base.rstrip("/")
        client = httpx.Client(headers={"Authorization": f"Bearer {key}"},
                              timeout=self.timeout_s,
                              limits=httpx.Limits(max_connections=self._concurrency()))
        self.served_model = self.options.weights or self._first_model(client)
        return client

    def _first_model(self, client: Any) -> str:
        try:
            response = client.get(f"{self.base_url}/models")
            response.raise_for_status()
            models = [m["id"] for m in response.json().get("data", [])]
        except Exception as exc:  # any failure here means the user must name the model
            raise ConfigError(f"{self.name}: cannot list the models of {self.base_url} ({exc}); "
                              f"name one as openai-chat=MODEL") from exc
        if not models:
            raise ConfigError(f"{self.name}: {self.base_url} lists no models; name one as "
                              f"openai-chat=MODEL")
        return models[0]

    def unload(self) -> None:
        if self.model is not None:
            self.model.close()
        self.model = None

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "served_model": self.served_model, "api_base": self.base_url}

    def _concurrency(self) -> int:
        return max(1, int(self.options.api_concurrency))

    def caption(self, requests: Sequence[CaptionRequest],
                progress: Progress) -> Iterator[tuple[int, Caption]]:
        if not requests:
            return
        self.load()
        task = progress.task(f"captions [{self.name}]", total=len(requests))
        limit = self._concurrency()
        todo = iter(requests)
        running: dict[Future[Caption], int] = {}
        try:
            with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="caption-api") as pool:
                while True:
                    # Submit lazily so memory stays flat however many scenes a video has.
                    while len(running) < limit and (req := next(todo, None)) is not None:
                        running[pool.submit(self.caption_one, req)] = req.index
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = running.pop(future)
                        task.advance()
                        yield index, future.result()
        finally:
            task.close()

    def caption_one(self, request: CaptionRequest) -> Caption:
        """Caption one scene, retrying transient failures; other failures become an error."""
        body = self.payload(request)
        last = ""
        for attempt in range(self.max_attempts):
            try:
                return self._post(body)
            except _Retryable as exc:
                last = str(exc)
                if attempt + 1 < self.max_attempts:
                    delay = exc.wait_s if exc.wait_s is not None else self.retry_base_s * 2**attempt
                    delay = min(delay, self.retry_max_s)
                    log.info("scene %d: %s; retry in %.1f s", request.index, last, delay)
                    time.sleep(delay)
        log.warning("scene %d: giving up after %d attempts: %s", request.index,
                    self.max_attempts, last)
        return Caption("", 0, error=f"API request failed after {self.max_attempts} attempts: "
                                    f"{last}")

    def _post(self, body: dict[str, Any]) -> Caption:
        import httpx

        try:
            response = self.model.post(f"{self.base_url}/chat/completions", json=body)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code in (401, 403):
            raise ConfigError(f"{self.name}: {self.base_url} refused the API key "
                              f"(HTTP {response.status_code}): {response.text[:200]}")
        if response.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {response.status_code}", _retry_after(response))
        if response.status_code >= 400:
            return Caption("", 0, error=f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return Caption("", 0, error=f"unexpected response: {exc}: {response.text[:200]}")
        tokens = (data.get("usage") or {}).get("completion_tokens") or 0
        return Caption(text.strip(), int(tokens))

    def payload(self, request: CaptionRequest) -> dict[str, Any]:
        """The chat request body: the frames as base64 JPEG parts, then the instruction."""
        instruction = self.options.prompt or DEFAULT_PROMPT
        if request.context.strip():
            instruction = f"{request.context.strip()}\n\n{instruction}"
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": jpeg_data_url(path)}}
            for path in request.frames]
        parts.append({"type": "text", "text": instruction})
        body: dict[str, Any] = {
            "model": self.served_model, "messages": [{"role": "user", "content": parts}],
            "max_tokens": self.options.max_new_tokens, "temperature": 0}
        if self.options.min_new_tokens:
            body["min_tokens"] = self.options.min_new_tokens  # vLLM/SGLang extension
        return body


def jpeg_data_url(path: str) -> str:
    """A frame file as a ``data:image/jpeg;base64,...`` URL (the frames are already JPEG)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read frame image: {exc}") from exc
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the exponential backoff
