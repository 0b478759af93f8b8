"""The one HTTP client for OpenAI-compatible servers (speech transcription, chat captions).

It owns what both backends need: the key and base URL from the environment or options, the auth
header (Azure's ``api-key`` too), a bound on requests in flight, retries of 408/409/429/5xx,
timeouts and dropped connections with exponential backoff and jitter (``Retry-After`` honoured),
and errors that are short and safe to print: a URL's ``user:key@`` and the key itself never
appear in messages, logs or ``run.json``, and a server's reply is cut to its status, error type
and at most about 80 printable characters.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from scenescribe.errors import ConfigError, StageError, redact_secrets, redact_url, short_reason

log = logging.getLogger("scenescribe.api")

KEY_ENV = ("OPENAI_API_KEY", "SCENESCRIBE_API_KEY")
BASE_ENV = "OPENAI_BASE_URL"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``https://user:key@host/v1`` to ``https://host/v1`` and ``(user, key)``: the credentials
    travel as a Basic auth header, never inside a URL that httpx would log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def api_key() -> str | None:
    return next((os.environ[k] for k in KEY_ENV if os.environ.get(k)), None)


def base_url(option: str | None) -> str | None:
    return option or os.environ.get(BASE_ENV) or None


class ApiError(StageError):
    """A request failed for good. ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiKeyRefused(ConfigError):
    """401/403: every later request would fail the same way, so the run stops."""


class OpenAIClient:
    """Thread-safe; at most ``concurrency`` requests in flight whatever the callers' threads."""

    def __init__(self, base: str, key: str, *, concurrency: int, timeout_s: float,
                 max_attempts: int = 6, backoff_s: float = 1.0, max_backoff_s: float = 60.0
                 ) -> None:
        import httpx

        self.base, basic = split_credentials(base.rstrip("/"))
        self.key = key
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        # user:key@ in the URL means Basic auth (as httpx would do with the URL as given).
        self._http = httpx.Client(timeout=timeout_s, headers=self._headers(),
                                  auth=httpx.BasicAuth(*basic) if basic else None,
                                  limits=httpx.Limits(max_connections=max(1, concurrency)))

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if (urlsplit(self.base).hostname or "").endswith(".azure.com"):
            headers["api-key"] = self.key  # Azure OpenAI's header
        return headers

    def shown(self, url: str | None = None) -> str:
        """``url`` (default: the base) as it may be printed or stored: credentials removed."""
        return redact_url(url or self.base)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send one request, retrying transient failures; the 2xx response, else an error.

        Raises ``ApiKeyRefused`` on 401/403 and ``ApiError`` on another status or when the
        retries are spent.
        """
        import httpx

        url = split_credentials(url)[0]  # the client's auth carries them
        problem = ""
        status: int | None = None
        for attempt in range(self.max_attempts):
            retry_after = None
            try:
                with self._slots:
                    response = self._http.request(method, url, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                status, problem = None, self.clean(f"{type(exc).__name__}: {exc}")
            else:
                status = response.status_code
                if status < 400:
                    return response
                problem = self.describe(response)
                if status in (401, 403):
                    raise ApiKeyRefused(f"{self.shown(url)}: the server refused the API key "
                                        f"({problem})")
                if status not in RETRY_STATUS:
                    raise ApiError(f"{self.shown(url)}: request failed ({problem})", status)
                retry_after = response.headers.get("retry-after")
            if attempt + 1 < self.max_attempts:
                delay = self.delay(attempt, retry_after)
                log.info("%s: %s; retry %d in %.1f s", self.shown(url), problem, attempt + 1,
                         delay)
                time.sleep(delay)
        raise ApiError(f"{self.shown(url)}: giving up after {self.max_attempts} attempts: "
                       f"{problem}", status)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        base = self.backoff_s * 2 ** attempt
        return min(self.max_backoff_s, base * (1 + random.random() * 0.25))

    def clean(self, text: str, limit: int = 80) -> str:
        """Text that may hold a key or credentials, made short and safe to print."""
        return short_reason(redact_secrets(text, (self.key,)), limit)

    def describe(self, response: Any) -> str:
        """``HTTP 503 (server_error: overloaded)``: status, error type, a short message."""
        detail = ""
        try:
            body = json.loads(response.content[:65536])
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            kind = error.get("type") or error.get("code") or ""
            detail = f"{kind}: {error.get('message') or ''}" if kind else str(error.get("message"))
        elif isinstance(error, str):
            detail = error
        elif body is None:
            detail = response.content[:200].decode("utf-8", "replace")
        detail = self.clean(detail).strip(": ")
        return f"HTTP {response.status_code}" + (f" ({detail})" if detail else "")
