"""Exports derived from the records (never recomputed): JSON, JSONL, SRT, WebVTT, HTML."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from scenescribe.errors import InputError
from scenescribe.records import SceneRecord
from scenescribe.store import atomic_open

Format = Literal["json", "jsonl", "srt", "vtt", "html"]
FORMATS: tuple[str, ...] = ("json", "jsonl", "srt", "vtt", "html")
SUMMARY_LABEL = "[summary from detected speech, sounds and objects]"


def find_runs(path: str | Path) -> list[Path]:
    """A video's output folder, or every such folder inside a run's ``--out`` folder."""
    p = Path(path)
    try:
        if (p / "scenes.jsonl").exists():
            return [p]
        runs = sorted(d for d in p.iterdir() if (d / "scenes.jsonl").exists()) if p.is_dir() else []
    except OSError as exc:
        raise InputError(p, f"cannot read the folder: {exc.strerror or exc}") from None
    if not runs:
        raise InputError(p, "no scenes.jsonl here: expected a folder written by 'scenescribe run'")
    return runs


def load_records(run_dir: str | Path) -> Iterator[SceneRecord]:
    """Stream the scene records of one video's output folder.

    A hand-edited or damaged file fails with ``InputError`` naming the file, the line and what
    is wrong with it.
    """
    path = Path(run_dir) / "scenes.jsonl"
    if not path.exists():
        raise InputError(run_dir, "no scenes.jsonl here: expected a folder written by 'scenescribe run'")
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if raw.strip():
                    yield _record(path, number, raw)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def _record(path: Path, number: int, raw: bytes) -> SceneRecord:
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise InputError(path, f"line {number}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"line {number}: not valid JSON ({exc.msg} at column "
                               f"{exc.colno})") from None
    if not isinstance(data, Mapping):
        raise InputError(path, f"line {number}: expected a JSON object (a scene record), found "
                               f"{type(data).__name__}")
    try:
        return SceneRecord.from_dict(data)
    except KeyError as exc:
        raise InputError(path, f"line {number}: not a scene record: missing key {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InputError(path, f"line {number}: not a scene record: {reason}") from None


# The run.json fields the exports read, and the type each must have.
_FACT_TYPES: dict[str, tuple[type, ...]] = {
    "video": (dict,), "timings": (dict,), "scenes": (int,), "video.path": (str,),
    "video.duration": (int, float), "video.fps": (int, float), "video.width": (int,),
    "video.height": (int,)}


def load_facts(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a video's output folder ({} when absent), checked where exports read it."""
    path = Path(run_dir) / "run.json"
    if not path.exists():
        return {}
    try:
        facts = json.loads(path.read_bytes())
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(facts, dict):
        raise InputError(path, f"expected a JSON object, found {type(facts).__name__}")
    for key, types in _FACT_TYPES.items():
        head, _, tail = key.partition(".")
        value = facts.get(head) if not tail else (facts.get(head) or {}).get(tail)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise InputError(path, f"{key!r} must be {' or '.join(t.__name__ for t in types)}, "
                                   f"found {type(value).__name__}")
    for stage, timing in facts.get("timings", {}).items():
        if not isinstance(timing, dict) or not all(
                isinstance(timing.get(k, 0) or 0, (int, float)) for k in ("load_s", "compute_s", "rtf")):
            raise InputError(path, f"'timings.{stage}' must be an object of numbers")
    return facts


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


def cue_lines(text: str) -> str:
    """Caption text safe inside one subtitle cue: blank lines (which end a cue) removed, each
    line stripped, so no text can end its cue or start another."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def srt_text(text: str) -> str:
    # SRT has no escape syntax: an arrow cannot be mistaken for a timing line.
    return cue_lines(text).replace("-->", "→")


def vtt_text(text: str) -> str:
    # WebVTT cue text is markup: &, < and > escaped (which also breaks up any "-->").
    return html.escape(cue_lines(text), quote=False)


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(records: Iterator[SceneRecord], model: str | None = None) -> Iterator[str]:
    """SubRip cues, numbered from 1; a scene with no text at all gets no cue."""
    n = 0
    for record in records:
        s = record.scene
        if text := srt_text(cue_text(record, model)):
            n += 1
            yield f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{text}\n\n"


def to_vtt(records: Iterator[SceneRecord], model: str | None = None) -> Iterator[str]:
    """WebVTT cues named ``scene-N``; a scene with no text at all gets no cue."""
    yield "WEBVTT\n\n"
    for record in records:
        s = record.scene
        if text := vtt_text(cue_text(record, model)):
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
    try:
        with atomic_open(target) as f:
            for chunk in chunks:
                f.write(chunk)
    except OSError as exc:
        raise InputError(target, f"cannot write the export: {exc.strerror or exc}") from None
    return target
