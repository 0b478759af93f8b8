"""Store: atomic writes, resumable checkpoints, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenescribe import store
from scenescribe.store import JsonlCheckpoint, atomic_open, fingerprint_file, stable_hash


def test_checkpoint_resumes_and_drops_torn_line(tmp_path: Path) -> None:
    final = tmp_path / "x.jsonl"
    with JsonlCheckpoint(final) as ckpt:
        ckpt.append({"index": 0, "v": "a"})
        ckpt.append({"index": 1, "v": "b"})
    with ckpt.partial.open("a") as f:
        f.write('{"index": 2, "v": "c"')  # a crash mid-line
    again = JsonlCheckpoint(final)
    assert sorted(again.done) == [0, 1]
    assert ckpt.partial.read_text().endswith("\n")  # torn tail truncated
    again.append({"index": 2, "v": "c"})
    again.finish()
    assert not again.partial.exists()
    lines = [json.loads(x) for x in final.read_text().splitlines()]
    assert [x["index"] for x in lines] == [0, 1, 2]
    assert JsonlCheckpoint(final).complete


def test_checkpoint_finish_orders_by_key(tmp_path: Path) -> None:
    ckpt = JsonlCheckpoint(tmp_path / "y.jsonl")
    for i in (3, 1, 2):
        ckpt.append({"index": i})
    ckpt.finish()
    assert [json.loads(x)["index"] for x in (tmp_path / "y.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_atomic_open_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 1000)
    first = fingerprint_file(a)
    a.write_bytes(b"x" * 999 + b"y")
    assert fingerprint_file(a) != first


def test_sampled_fingerprint_for_large_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "FULL_HASH_LIMIT", 1000)
    monkeypatch.setattr(store, "SAMPLE_BYTES", 100)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 40)
    one = fingerprint_file(big)
    data = bytearray(big.read_bytes())
    data[0] ^= 1  # inside the first sample
    big.write_bytes(bytes(data))
    assert fingerprint_file(big) != one


def test_stable_hash_ignores_key_order() -> None:
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_an_undurable_write_is_still_atomic_and_skips_the_flush(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The frames stage's JPEGs: renamed into place whole, but not flushed one by one (a
    cut-off JPEG is found on resume instead)."""
    import os

    from scenescribe.store import atomic_write_bytes

    flushed: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(fd))
    target = tmp_path / "a.jpg"
    atomic_write_bytes(target, b"abc", durable=False)
    assert target.read_bytes() == b"abc" and not flushed
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg"]  # no temporary left behind
    atomic_write_bytes(target, b"abcd")
    assert target.read_bytes() == b"abcd" and len(flushed) == 1
