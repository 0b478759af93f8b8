"""Per-video state of a run: its output folder, cache keys, scenes and measured timings.

Layout of ``<out>/<stem>/``::

    scenes.jsonl          one scene record per line (the output contract)
    run.json              the run's facts: video, models, timings, versions
    frames/               sampled JPEGs shared by every model
    captions/<model>.jsonl  captions per model
    .work/                resumable checkpoints keyed by content fingerprint and options
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenescribe.records import Scene, VideoInfo
from scenescribe.store import JsonlCheckpoint, atomic_write_json, stable_hash

WORK_DIR = ".work"
CAPTION_INDEX = "captions.json"


@dataclass
class VideoJob:
    """One input video moving through the stages. ``error`` set means it failed and is skipped."""

    source: Path
    out_dir: Path
    info: VideoInfo | None = None
    fingerprint: str = ""
    scenes: list[Scene] = field(default_factory=list)
    shots_key: str = ""
    frames_key: str = ""
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    stage_keys: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def work_dir(self) -> Path:
        return self.out_dir / WORK_DIR

    def checkpoint(self, stage: str, key: str) -> JsonlCheckpoint:
        self.stage_keys[stage] = key
        return JsonlCheckpoint(self.work_dir / f"{stage}-{key}.jsonl")

    def key(self, *parts: Any) -> str:
        return stable_hash(parts)

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason

    def clean_temp(self) -> None:
        """Remove temporary files a killed run left behind (finished files are never temps)."""
        if self.out_dir.exists():
            for tmp in self.out_dir.rglob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)

    def record_timing(self, stage: str, **values: Any) -> None:
        self.timings.setdefault(stage, {}).update(values)

    # Caption runs are remembered in an index so later runs with other models keep them.
    def caption_index(self) -> dict[str, dict[str, str]]:
        path = self.work_dir / CAPTION_INDEX
        return json.loads(path.read_text()) if path.exists() else {}

    def remember_captions(self, model: str, key: str) -> None:
        index = self.caption_index()
        index[model] = {"key": key, "frames_key": self.frames_key}
        atomic_write_json(self.work_dir / CAPTION_INDEX, index)


def output_folders(sources: list[Path], out: Path) -> list[Path]:
    """``out/<stem>`` per video; a repeated stem gets its parent folder's name appended."""
    seen: dict[str, int] = {}
    folders = []
    for src in sources:
        name = src.stem
        if name in seen:
            seen[name] += 1
            name = f"{name}-{src.parent.name or 'dup'}-{seen[name]}"
        else:
            seen[name] = 1
        folders.append(out / name)
    return folders
