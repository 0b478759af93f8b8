"""Every checkpoint is pinned; a release-asset checkpoint is fetched by tag and checked by digest."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import MODELS
from scenescribe import registry
from scenescribe.cli import app
from scenescribe.errors import ModelNotFoundError
from scenescribe.options import ObjectOptions
from scenescribe.release_assets import download_release_asset, file_sha256

HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")


def test_every_checkpoint_pins_a_revision() -> None:
    named = [e for e in registry.entries() if e.checkpoint]
    assert len(named) >= 12
    for entry in named:
        assert entry.revision, entry.name
        if entry.release_file:  # a tag can move: the file's digest is pinned too
            assert entry.sha256 and HEX64.fullmatch(entry.sha256), entry.name
        else:
            assert HEX40.fullmatch(entry.revision), entry.name  # a hub commit, not a branch


def test_models_table_shows_each_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    from scenescribe import cli

    monkeypatch.setattr(cli.out, "_width", 400)  # one row per line, nothing folded
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.count("│") > 3}
    for entry in registry.entries():
        if entry.checkpoint:
            pin = entry.revision[:12] if entry.revision else "?"
            assert pin in rows[entry.name], entry.name
    assert "v8.3.0 sha256:f59b3d833e2f" in rows["yolov8n"]


@pytest.fixture
def release_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server laid out like GitHub's release downloads."""
    root = tmp_path / "site"
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _entry(content: bytes) -> registry.ModelEntry:
    base = registry.get_entry("yolov8n")
    return replace(base, checkpoint="acme/weights", revision="v1.0", release_file="w.pt",
                   sha256=hashlib.sha256(content).hexdigest())


def _publish(root: Path, content: bytes) -> None:
    folder = root / "acme" / "weights" / "releases" / "download" / "v1.0"
    folder.mkdir(parents=True)
    (folder / "w.pt").write_bytes(content)


def test_release_asset_downloads_once_and_is_checked(release_server: tuple[str, Path],
                                                     tmp_path: Path) -> None:
    url, root = release_server
    content = b"weights" * 1000
    _publish(root, content)
    cache = tmp_path / "cache"
    path = download_release_asset(_entry(content), base=url, cache=cache)
    assert path.read_bytes() == content and path.parent.name == "v1.0"
    (root / "acme").rename(root / "gone")  # the second call must not need the network
    assert download_release_asset(_entry(content), base=url, cache=cache) == path


def test_release_asset_with_another_digest_is_refused_and_not_kept(
        release_server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = release_server
    _publish(root, b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotFoundError, match="not the pinned") as err:
        download_release_asset(_entry(b"the real weights"), base=url, cache=cache)
    assert "\n" not in str(err.value)
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing half-written or wrong


def test_missing_release_asset_is_one_line(release_server: tuple[str, Path],
                                           tmp_path: Path) -> None:
    url, _ = release_server
    with pytest.raises(ModelNotFoundError, match="could not download .*w.pt") as err:
        download_release_asset(_entry(b"x"), base=url, cache=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_offline_release_entry_never_downloads(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="offline"):
        registry.resolve_weights(registry.get_entry("yolov8n"), model_dir=tmp_path)
    assert registry.is_available(registry.get_entry("yolov8n"), tmp_path)[0] == "no"


def test_yolo_facts_report_the_pin_and_the_local_file_digest() -> None:
    backend = registry.create("yolov8n", "objects", options=ObjectOptions(), device="cpu",
                              model_dir=MODELS)
    facts = backend.facts()
    local = MODELS / "yolo" / "yolov8n.pt"
    assert facts["checkpoint"] == "ultralytics/assets" and facts["revision"] == "v8.3.0"
    assert facts["weights_sha256"] == file_sha256(local)
    # The shared copy is a rebuild from the TFLite export, so it does not match the release.
    assert facts["weights_match_pin"] is (file_sha256(local) == facts["sha256"])
