"""One exception hierarchy for the library; the CLI maps these to exit codes."""

from __future__ import annotations

from pathlib import Path


class ScenescribeError(Exception):
    """Base class of every error scenescribe raises on purpose."""


class InputError(ScenescribeError):
    """A user-supplied file cannot be processed. The message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(ScenescribeError):
    """Invalid options or configuration file."""


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


class StageError(ScenescribeError):
    """A pipeline stage failed on one video; other videos go on."""
