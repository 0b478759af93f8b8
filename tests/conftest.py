"""Shared fixtures. Every test runs with the Hugging Face hub offline and the network blocked:
a connection to anything but this machine fails the test that made it."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCENESCRIBE_SHARED", ROOT.parent / "shared")).resolve()
MEDIA = SHARED / "media"
MODELS = SHARED / "models"

for _var, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "HF_DATASETS_OFFLINE": "1", "YOLO_OFFLINE": "1",
                     "SCENESCRIBE_MODEL_DIR": str(MODELS)}.items():
    os.environ[_var] = _value  # set before any backend import reads them

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo
_real_connect_ex = socket.socket.connect_ex
_LOCAL_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")


class NetworkAttempt(AssertionError):
    pass


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = str(address[0]) if isinstance(address, tuple) and address else ""
    return host.startswith(_LOCAL_PREFIXES)


@pytest.fixture(autouse=True)
def block_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any test that tries to reach a non-local address."""
    attempts: list[str] = []

    def guarded(self: socket.socket, address: object) -> object:
        if not _is_local(address):
            attempts.append(repr(address))
            raise NetworkAttempt(f"network access attempted in a test: {address!r}")
        return _real_connect(self, address)

    def guarded_ex(self: socket.socket, address: object) -> object:
        if not _is_local(address):
            attempts.append(repr(address))
            raise NetworkAttempt(f"network access attempted in a test: {address!r}")
        return _real_connect_ex(self, address)

    def guarded_lookup(host: object, *args: object, **kwargs: object) -> object:
        if host is not None and not _is_local((host,)):
            attempts.append(f"DNS lookup of {host!r}")
            raise NetworkAttempt(f"DNS lookup attempted in a test: {host!r}")
        return _real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    yield attempts
    if attempts:
        pytest.fail(f"test attempted network access: {attempts}")


def make_tiny_ast(folder: Path, labels: list[str] | None = None) -> Path:
    """A two-layer random AST checkpoint (float32) in ``folder``: AST's real architecture and
    feature extractor, 3 classes or ``labels``."""
    import warnings

    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    named = {} if labels is None else {"id2label": dict(enumerate(labels)),
                                       "label2id": {name: i for i, name in enumerate(labels)}}
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_length=1024, num_mel_bins=128,
                       **(named or {"num_labels": 3}))
    torch.manual_seed(0)
    ASTForAudioClassification(config).save_pretrained(folder)
    with warnings.catch_warnings():  # AST's lowest Kaldi mel filters are empty: expected
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero")
        ASTFeatureExtractor(max_length=1024, num_mel_bins=128).save_pretrained(folder)
    return folder


def media(rel: str) -> Path:
    path = MEDIA / rel
    if not path.exists():  # fail, never skip: CI always has ../shared beside the checkout
        raise FileNotFoundError(f"shared media missing: {path} (set SCENESCRIBE_SHARED)")
    return path


def ground_truth(rel: str) -> dict:
    return json.loads(media(rel).read_text())


@pytest.fixture
def synthetic_clip() -> Path:
    return media("synthetic/synthetic_cuts_speech.mp4")


@pytest.fixture
def bbb_clip() -> Path:
    return media("real/big_buck_bunny_0_30.webm")


@pytest.fixture(scope="module")
def photo_clip(tmp_path_factory: pytest.TempPathFactory) -> object:
    """``photo_clip.make_photo_clip``'s 6 s clip of real photos (the object tests)."""
    from photo_clip import make_photo_clip

    return make_photo_clip(tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def tracker() -> Iterator[object]:
    """A loaded YOLOv8n tracker on the CPU (the object tests)."""
    from photo_clip import loaded_tracker

    backend = loaded_tracker()
    yield backend
    backend.unload()  # type: ignore[attr-defined]
