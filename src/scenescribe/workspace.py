"""The one place that owns a video's output folder: its file names, its lock and its cleanup.

Layout of ``<out>/<stem>/``::

    scenes.jsonl            one scene record per line (the output contract)
    run.json                the run's facts: video, models, stages, timings, versions
    frames/                 sampled JPEGs shared by every model
    captions/<model>.jsonl  captions per model
    .scenescribe.lock       held while a run works on this folder (the owner's pid)
    .work/<stage>-<key>.*   resumable checkpoints, one per stage, keyed by the stage graph
    .work/spool/<stage>-<key>/  frames one stage's decode keeps for a later one (media/spool.py)
    .work/captions.json     which caption checkpoints earlier runs left, with their input keys
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenescribe.store import atomic_write_json

log = logging.getLogger("scenescribe.workspace")

WORK_DIR = ".work"
SCENES_FILE = "scenes.jsonl"
RUN_FILE = "run.json"
FRAMES_DIR = "frames"
CAPTIONS_DIR = "captions"
CAPTION_INDEX = "captions.json"
LOCK_FILE = ".scenescribe.lock"
MAX_STEM = 120  # characters; file systems allow 255 bytes and suffixes are appended


def slug(name: str) -> str:
    """A file-name-safe form of a stage or model name (ASCII letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def safe_stem(source: Path) -> str:
    """A folder name for ``source`` that can never leave ``--out``.

    Unicode letters are kept (NFC); path separators, control characters and other punctuation
    become ``_``; leading dots are stripped so ``..``, ``.`` and hidden names cannot occur.
    """
    name = unicodedata.normalize("NFC", source.name)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    stem = "".join(c if unicodedata.category(c)[0] in "LN" or c in "-_. " else "_" for c in stem)
    stem = stem.strip(" .")[:MAX_STEM].strip(" .")
    return stem or "video"


def output_folders(sources: list[Path], out: Path) -> list[Path]:
    """``out/<safe stem>`` per video; a repeated stem gets a parent-folder suffix and a count."""
    seen: dict[str, int] = {}
    folders = []
    for src in sources:
        name = safe_stem(src)
        key = name.casefold()  # case-insensitive file systems would merge Foo and foo
        if key in seen:
            seen[key] += 1
            name = f"{name}-{safe_stem(Path(src.parent.name or 'dup'))}-{seen[key]}"
        else:
            seen[key] = 1
        folder = out / name
        if folder.parent != out or name in {".", ".."} or name == WORK_DIR:
            raise AssertionError(f"unsafe output folder {folder}")  # safe_stem guarantees it
        folders.append(folder)
    return folders


@dataclass
class WorkFolder:
    """A video's output folder; remembers what this run created so cleanup removes only that."""

    root: Path
    created: list[Path] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.root / WORK_DIR

    @property
    def scenes_file(self) -> Path:
        return self.root / SCENES_FILE

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    def captions_file(self, model: str) -> Path:
        return self.root / CAPTIONS_DIR / f"{slug(model)}.jsonl"

    def stage_file(self, stage: str, key: str, ext: str = "jsonl") -> Path:
        """The checkpoint of ``stage`` computed under ``key``."""
        return self.work / f"{slug(stage)}-{key}.{ext}"

    def remove_stale(self, stage: str, keep: Path) -> None:
        """Delete this stage's checkpoints of other keys (an earlier configuration)."""
        pattern = re.compile(re.escape(slug(stage)) + r"-[0-9a-f]{16}\.[a-z]+(\.partial)?")
        for path in self.work.glob(f"{slug(stage)}-*"):
            if pattern.fullmatch(path.name) and not path.name.startswith(keep.name):
                path.unlink(missing_ok=True)

    def make(self) -> None:
        """Create the folder (and ``--out``), noting which of them this run created."""
        missing = [p for p in (self.root.parent, self.root) if not p.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        self.created.extend(missing)

    def clean_temp(self) -> None:
        """Remove temporary files a killed run left behind (finished files are never temps)."""
        if self.root.exists():
            for tmp in self.root.rglob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)

    def discard_work(self) -> None:
        """``--force``: forget cached results (only the checkpoint folder scenescribe owns)."""
        if self.work.is_dir():
            shutil.rmtree(self.work)

    def remove_created(self) -> None:
        """After a failure: delete the folders this run created, never anything older."""
        for path in reversed(self.created):
            if path == self.root:
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()  # --out itself only when empty (other videos may live there)
        self.created.clear()

    # Caption runs are remembered in an index so later runs with other models keep them.
    def caption_index(self) -> dict[str, dict[str, Any]]:
        path = self.work / CAPTION_INDEX
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as exc:
            log.warning("%s is damaged (%s); earlier captions are ignored", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def remember_captions(self, model: str, key: str, inputs: dict[str, str],
                          facts: dict[str, Any]) -> None:
        """Note a finished caption checkpoint, its input keys and its model facts (decoding
        settings are known only once loaded: a cached rerun reports them from here)."""
        index = self.caption_index()
        index[model] = {"key": key, "inputs": inputs, "facts": facts}
        atomic_write_json(self.work / CAPTION_INDEX, index)
