"""Weights published as a release asset (a file on a GitHub release), pinned by tag and digest.

Some checkpoints are not on the Hugging Face hub as a versioned repository: Ultralytics ships
``yolov8n.pt`` as an asset of a release of ``ultralytics/assets``. A tag can be moved, so the
entry pins the file's SHA-256 as well; a download whose digest differs is refused and never kept.
Downloads land in a cache folder of our own (``SCENESCRIBE_CACHE``, else
``$XDG_CACHE_HOME/scenescribe`` or ``~/.cache/scenescribe``), written
to a temporary name and moved into place only once checked.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from scenescribe.errors import ModelNotFoundError, first_line

if TYPE_CHECKING:
    from scenescribe.registry import ModelEntry

CACHE_ENV = "SCENESCRIBE_CACHE"
RELEASES_URL = "https://github.com"
TIMEOUT_S = 60.0
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "scenescribe"


def asset_url(entry: ModelEntry, base: str = RELEASES_URL) -> str:
    assert entry.checkpoint and entry.revision and entry.release_file
    return f"{base}/{entry.checkpoint}/releases/download/{entry.revision}/{entry.release_file}"


def download_release_asset(entry: ModelEntry, *, base: str = RELEASES_URL,
                           cache: Path | None = None) -> Path:
    """The entry's pinned release file, from the cache or downloaded and checked."""
    assert entry.checkpoint and entry.revision and entry.release_file and entry.sha256
    folder = (cache or cache_root()) / "releases" / entry.checkpoint / entry.revision
    target = folder / entry.release_file
    if target.is_file():
        if file_sha256(target) == entry.sha256:
            return target
        raise ModelNotFoundError(
            f"{entry.name}: cached {target} does not match the pinned sha256 "
            f"{entry.sha256[:16]}…; delete it to download again")
    url = asset_url(entry, base)
    folder.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{entry.release_file}.", dir=folder)
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as sink, \
                urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            for block in iter(lambda: response.read(CHUNK), b""):
                digest.update(block)
                sink.write(block)
        if digest.hexdigest() != entry.sha256:
            raise ModelNotFoundError(
                f"{entry.name}: {url} has sha256 {digest.hexdigest()[:16]}…, not the pinned "
                f"{entry.sha256[:16]}…; refusing it")
        os.replace(temp, target)
        return target
    except ModelNotFoundError:
        raise
    except Exception as exc:  # network errors come in many types; the user needs one line
        reason = first_line(exc)
        raise ModelNotFoundError(
            f"{entry.name}: could not download {url} ({reason}); pass a local path or "
            f"--model-dir") from exc
    finally:
        temp.unlink(missing_ok=True)
