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
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from scenescribe.captions.base import DEFAULT_PROMPT, Captioner, CaptionRequest
from scenescribe.errors import ConfigError, InputError
from scenescribe.openai_client import BASE_ENV, KEY_ENV, ApiError, OpenAIClient, api_key, base_url
from scenescribe.progress import Progress
from scenescribe.records import Caption

log = logging.getLogger("scenescribe.captions.api")


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

    def _load(self) -> OpenAIClient:
        base = base_url(self.options.api_base)
        if not base:
            raise ConfigError(f"{self.name}: no server: set captions.api_base or {BASE_ENV} "
                              f"(e.g. http://localhost:8000/v1)")
        key = api_key()
        if not key:
            raise ConfigError(f"{self.name}: no API key: set {' or '.join(KEY_ENV)} (any "
                              f"value for a local server without authentication)")
        client = OpenAIClient(base, key, concurrency=self._concurrency(), timeout_s=self.timeout_s,
                              max_attempts=self.max_attempts, backoff_s=self.retry_base_s,
                              max_backoff_s=self.retry_max_s)
        self.base_url = client.shown()  # what facts and messages show: no credentials
        try:
            self.served_model = self.options.weights or self._first_model(client)
        except BaseException:
            client.close()
            raise
        return client

    def _first_model(self, client: OpenAIClient) -> str:
        try:
            response = client.request("GET", f"{client.base}/models")
            models = [m["id"] for m in response.json().get("data", [])]
        except ApiError as exc:
            raise ConfigError(f"{self.name}: cannot list the models ({exc}); name one as "
                              f"openai-chat=MODEL") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{self.name}: {self.base_url}/models gave an unexpected answer "
                              f"({type(exc).__name__}); name a model as openai-chat=MODEL"
                              ) from None
        if not models:
            raise ConfigError(f"{self.name}: {self.base_url} lists no models; name one as "
                              f"openai-chat=MODEL")
        return str(models[0])

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
        """Caption one scene (the client retries transient failures); a failure that is not
        the key's becomes the scene's error caption and the run goes on."""
        client: OpenAIClient = self.model
        try:
            response = client.request("POST", f"{client.base}/chat/completions",
                                      json=self.payload(request))
        except ApiError as exc:
            log.warning("scene %d: %s", request.index, exc)
            return Caption("", 0, error=str(exc))
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
            tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return Caption("", 0, error=f"unexpected response ({type(exc).__name__}: "
                                        f"{client.clean(str(exc))})")
        return Caption(str(text).strip(), tokens)

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
