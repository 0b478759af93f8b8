"""One exception hierarchy for the library; the CLI maps these to exit codes."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


class ScenescribeError(Exception):
    """Base class of every error scenescribe raises on purpose."""


class InputError(ScenescribeError):
    """A user-supplied file cannot be processed. The message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Raised in worker processes (Ray tasks, process pools) and unpickled in the caller.
        return type(self), (self.path, self.reason)


class ConfigError(ScenescribeError):
    """Invalid options or configuration file."""


class OptionError(ConfigError):
    """An option's value is invalid (bad usage: the CLI exits with 2). The message names the
    option, what was expected and what was found."""


class ModelNotFoundError(ScenescribeError):
    """A model name or its weights could not be resolved."""


class BackendUnavailableError(ScenescribeError):
    """A backend's optional dependency is not installed."""

    def __init__(self, backend: str, module: str, extra: str) -> None:
        self.backend = backend
        self.module = module
        self.extra = extra
        super().__init__(
            f"backend {backend!r} needs the Python package {module!r}: "
            f"pip install 'scenescribe[{extra}]'"
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        return type(self), (self.backend, self.module, self.extra)


class StageError(ScenescribeError):
    """A pipeline stage failed on one video; other videos go on."""


_SECRET_QUERY = re.compile(r"((?:api[-_]?key|key|token|secret|password|sig|signature)=)[^&#\s]*",
                           re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` without credentials: ``user:key@`` becomes ``***@`` and key-like query values
    become ``***``, so a URL can be written to ``run.json``, logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_secrets(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """``text`` with each of ``secrets`` (API keys) and any URL credentials masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return re.sub(r"(https?://)[^/\s@]+@", r"\1***@", text)


def short_reason(text: str, limit: int = 80) -> str:
    """A server's reply cut to one short printable line: never echo a whole body back."""
    line = "".join(c if c.isprintable() else " " for c in text)
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line, or its type's name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line`` of a library's exception, for a one-line error instead of a trace."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:limit]}" if text else type(exc).__name__
