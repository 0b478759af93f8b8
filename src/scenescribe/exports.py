"""Exports derived from the records (never recomputed): JSON, JSONL, SRT, WebVTT, HTML."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from scenescribe.errors import InputError
from scenescribe.records import SceneRecord
from scenescribe.store import atomic_open, read_jsonl

Format = Literal["json", "jsonl", "srt", "vtt", "html"]
FORMATS: tuple[str, ...] = ("json", "jsonl", "srt", "vtt", "html")
SUMMARY_LABEL = "[summary from detected speech, sounds and objects]"


def find_runs(path: str | Path) -> list[Path]:
    """A video's output folder, or every such folder inside a run's ``--out`` folder."""
    p = Path(path)
    if (p / "scenes.jsonl").exists():
        return [p]
    runs = sorted(d for d in p.iterdir() if (d / "scenes.jsonl").exists()) if p.is_dir() else []
    if not runs:
        raise InputError(p, "no scenes.jsonl here: expected a folder written by 'scenescribe run'")
    return runs


def load_records(run_dir: str | Path) -> Iterator[SceneRecord]:
    """Stream the scene records of one video's output folder."""
    path = Path(run_dir) / "scenes.jsonl"
    if not path.exists():
        raise InputError(run_dir, "no scenes.jsonl here: expected a folder written by 'scenescribe run'")
    for line in read_jsonl(path):
        yield SceneRecord.from_dict(line)


def load_facts(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def cue_text(record: SceneRecord, model: str | None = None) -> str:
    """A scene's caption from ``model`` (or the first model), else its labelled summary."""
    captions = {k: c for k, c in record.captions.items() if c.text}
    if model is not None and model in captions:
        return captions[model].text.strip()
    if model is None and captions:
        return next(iter(captions.values())).text.strip()
    if record.summary:
        return f"{SUMMARY_LABEL} {record.summary}"
    return record.transcript.text.strip()


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(records: Iterator[SceneRecord], model: str | None = None) -> Iterator[str]:
    for n, record in enumerate(records, 1):
        s = record.scene
        yield f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{cue_text(record, model)}\n\n"


def to_vtt(records: Iterator[SceneRecord], model: str | None = None) -> Iterator[str]:
    yield "WEBVTT\n\n"
    for record in records:
        s = record.scene
        text = cue_text(record, model).replace("-->", "→")
        yield f"scene-{s.index}\n{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{text}\n\n"


def to_json(run_dir: Path, records: Iterator[SceneRecord]) -> Iterator[str]:
    """One JSON document, streamed scene by scene so memory stays flat."""
    yield '{"facts": ' + json.dumps(load_facts(run_dir), ensure_ascii=False) + ', "scenes": ['
    for n, record in enumerate(records):
        yield ("," if n else "") + "\n" + json.dumps(record.to_dict(), ensure_ascii=False)
    yield "\n]}\n"


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None,
           model: str | None = None) -> Path:
    """Write one export of a video's records; returns the file written."""
    if fmt not in FORMATS:
        raise InputError(fmt, f"unknown export format; choose one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    # "jsonl" gets its own suffix so an export never overwrites the records it reads.
    suffix = "export.jsonl" if fmt == "jsonl" else fmt
    target = Path(out) if out else run_dir / f"{run_dir.name}.{suffix}"
    records = load_records(run_dir)
    if fmt == "html":
        from scenescribe.report import to_html

        chunks: Iterator[str] = to_html(run_dir, records, load_facts(run_dir))
    elif fmt == "srt":
        chunks = to_srt(records, model)
    elif fmt == "vtt":
        chunks = to_vtt(records, model)
    elif fmt == "json":
        chunks = to_json(run_dir, records)
    else:
        chunks = (json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
    with atomic_open(target) as f:
        for chunk in chunks:
            f.write(chunk)
    return target
