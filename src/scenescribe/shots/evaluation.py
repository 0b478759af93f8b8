"""Scoring shot boundaries against hand-checked ground truth (``real-clip-gt/1`` files).

A predicted boundary is a frame index: the first frame of a new scene. Matching, at
``tolerance`` frames (1 by default):

* each ground-truth hard cut is matched to at most one prediction within the tolerance (the
  nearest first); matched predictions are true positives, unmatched cuts are misses;
* a prediction left over that falls inside ``[start - tol, end + tol]`` of a ground-truth
  gradual transition counts as finding that transition: it is neither a false cut nor needed
  for hard-cut recall (a detector may or may not place a boundary in a dissolve);
* every other prediction is a false cut; those inside a hard-negative span (flash, flicker, fast
  motion) are also counted apart, so the benchmark can say where false cuts come from.

The corpus is every ``*.gt.json`` under ``benchmarks/shot_corpus/`` plus the ground-truth files
of ``../shared/media`` (see ``benchmarks/shot_corpus/README.md``); ``find_clip`` says where a
file's clip lives, or why it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

# Ground-truth files of ../shared/media that belong to the shot corpus.
SHARED_GT = ("shots/*.gt.json", "real/big_buck_bunny_0_30.gt.json", "real/intel_*.gt.json",
             "synthetic/*.gt.json")
CORPUS_ENV = "SCENESCRIBE_SHOT_CORPUS"
EXTRA_GT_ENV = "SCENESCRIBE_SHOT_GT_DIRS"

# Categories of ../shared/media's clips, whose gt files predate the "category" field.
_SHARED_CATEGORIES = {"big_buck_bunny_0_30": "animation", "dv_steamboat": "animation",
                      "psd_issue-195-aspect-ratio": "tv", "intel_car-detection": "static camera",
                      "intel_one-by-one-person-detection": "static camera",
                      "synthetic_cuts_speech": "synthetic"}
# Words of a gt's "kind" mapped to categories when it has no "category", first match wins.
_KIND_WORDS = (("music", "music video"), ("slideshow", "slideshow"), ("sport", "sports"),
               ("news", "news/talk"), ("talk", "news/talk"), ("screen", "screen recording"),
               ("anim", "animation"), ("cartoon", "animation"), ("documentary", "tv"),
               ("tv", "tv"), ("film", "film"), ("movie", "film"))


@dataclass(frozen=True, slots=True)
class Span:
    """Frames ``start..end`` inclusive, as the gt files write them."""

    start: int
    end: int
    type: str = ""

    def contains(self, frame: int, tolerance: int = 0) -> bool:
        return self.start - tolerance <= frame <= self.end + tolerance


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """One clip's annotation: hard cuts, gradual transitions and hard negatives (frames)."""

    name: str
    category: str
    file: str
    cuts: tuple[int, ...]
    transitions: tuple[Span, ...] = ()
    hard_negatives: tuple[Span, ...] = ()
    source: Mapping[str, Any] = field(default_factory=dict)
    gt_path: Path | None = None


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read a ``*.gt.json`` file (``real-clip-gt/1`` or the synthetic clip's schema)."""
    path = Path(path)
    data = json.loads(path.read_text())
    cuts = sorted(int(c["frame"]) for c in data.get("cuts", ())
                  if c.get("type", "hard") == "hard")
    # Cuts typed otherwise ("dissolve", "fade") are gradual transitions given as one frame.
    soft = [Span(int(c["frame"]), int(c["frame"]), str(c["type"]))
            for c in data.get("cuts", ()) if c.get("type", "hard") != "hard"]
    transitions = [_span(t) for t in data.get("gradual_transitions", ())] + soft
    negatives = [_span(t) for t in data.get("hard_negatives", ())]
    # A fade in from black before the first shot (or out to black after the last) joins no two
    # shots: a boundary there is a false one, so it is scored as a hard negative.
    first = min([*cuts, *(t.start for t in transitions if "fade_in" not in t.type)], default=None)
    last = max([*cuts, *(t.end for t in transitions if "fade_out" not in t.type)], default=None)
    edge = [t for t in transitions
            if ("fade_in" in t.type and (first is None or t.end < first))
            or ("fade_out" in t.type and (last is None or t.start > last))]
    transitions = [t for t in transitions if t not in edge]
    negatives += edge
    name = path.name.removesuffix(".gt.json")
    return GroundTruth(name=name, category=category_of(data, path), file=str(data.get("file", "")),
                       cuts=tuple(cuts), transitions=tuple(sorted(transitions, key=_start)),
                       hard_negatives=tuple(negatives), source=dict(data.get("source") or {}),
                       gt_path=path)


def _span(entry: Mapping[str, Any]) -> Span:
    start = int(entry.get("start_frame", entry.get("frame", 0)))
    return Span(start, int(entry.get("end_frame", start)), str(entry.get("type", "")))


def _start(span: Span) -> int:
    return span.start


def category_of(data: Mapping[str, Any], path: Path) -> str:
    """The gt's ``category``, else a known shared clip's, else a word of its ``kind``."""
    if data.get("category"):
        return str(data["category"]).lower()
    name = path.name.removesuffix(".gt.json")
    if name in _SHARED_CATEGORIES:
        return _SHARED_CATEGORIES[name]
    kind = str(data.get("kind", "")).lower()
    return next((category for word, category in _KIND_WORDS if word in kind), "other")


@dataclass
class Score:
    """Counts for one clip or a pool of clips; precision, recall and F1 are of hard cuts."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    fp_in_negatives: int = 0
    transitions_found: int = 0
    transitions: int = 0
    clips: int = 0
    missed: list[int] = field(default_factory=list)
    false: list[int] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def cuts(self) -> int:
        return self.tp + self.fn

    def __add__(self, other: Score) -> Score:
        return Score(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                     self.fp_in_negatives + other.fp_in_negatives,
                     self.transitions_found + other.transitions_found,
                     self.transitions + other.transitions, self.clips + other.clips)


def score(predicted: Iterable[int], truth: GroundTruth, tolerance: int = 1) -> Score:
    """Match predicted boundary frames to ``truth`` (module docstring gives the rules)."""
    preds = sorted(set(int(p) for p in predicted))
    # Nearest pairs first, so a cut with two predictions around it keeps the closer one.
    pairs = sorted((abs(p - c), p, c) for c in truth.cuts for p in preds if abs(p - c) <= tolerance)
    used_p: set[int] = set()
    used_c: set[int] = set()
    for _, p, c in pairs:
        if p not in used_p and c not in used_c:
            used_p.add(p)
            used_c.add(c)
    found_transitions: set[int] = set()
    false: list[int] = []
    in_negatives = 0
    for p in preds:
        if p in used_p:
            continue
        hit = [i for i, t in enumerate(truth.transitions) if t.contains(p, tolerance)]
        if hit:
            found_transitions.update(hit)
            continue
        false.append(p)
        in_negatives += any(n.contains(p, tolerance) for n in truth.hard_negatives)
    missed = [c for c in truth.cuts if c not in used_c]
    return Score(tp=len(used_c), fp=len(false), fn=len(missed), fp_in_negatives=in_negatives,
                 transitions_found=len(found_transitions), transitions=len(truth.transitions),
                 clips=1, missed=missed, false=false)


def pooled(scores: Iterable[Score]) -> Score:
    """Counts summed over clips (micro-averaged precision, recall and F1)."""
    total = Score()
    for s in scores:
        total = total + s
    return total


def by_category(items: Iterable[tuple[GroundTruth, Score]]) -> dict[str, Score]:
    """Pooled scores per category, in name order."""
    groups: dict[str, Score] = {}
    for truth, s in items:
        groups[truth.category] = groups.get(truth.category, Score()) + s
    return dict(sorted(groups.items()))


# The corpus on disk.

def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def corpus_gt_files(root: Path | None = None, media: Path | None = None) -> list[Path]:
    """Every gt file of the corpus: ``benchmarks/shot_corpus/*.gt.json`` and ../shared/media's."""
    root = root or repo_root()
    media = media or shared_media(root)
    folders = [root / "benchmarks" / "shot_corpus"]
    # More folders of gt files (os.pathsep-separated), e.g. a corpus branch not merged yet.
    folders += [Path(p) for p in os.environ.get(EXTRA_GT_ENV, "").split(os.pathsep) if p]
    files = [f for folder in folders for f in sorted(folder.glob("**/*.gt.json"))]
    for pattern in SHARED_GT:
        files += sorted(media.glob(pattern))
    return files


def shared_media(root: Path | None = None) -> Path:
    """``$SCENESCRIBE_SHARED/media``, else ``shared/media`` beside the repository."""
    shared = os.environ.get("SCENESCRIBE_SHARED")
    return Path(shared) / "media" if shared else _beside(root, "shared") / "media"


def corpus_dir(root: Path | None = None) -> Path:
    """Where clips of the corpus live: ``$SCENESCRIBE_SHOT_CORPUS``, else ``shot-corpus`` beside
    the repository."""
    env = os.environ.get(CORPUS_ENV)
    return Path(env) if env else _beside(root, "shot-corpus")


def _beside(root: Path | None, name: str) -> Path:
    """``name`` beside the repository; a git worktree nested one level deeper (``wt/<branch>``)
    also finds it beside its parent."""
    root = root or repo_root()
    for base in (root.parent, root.parent.parent):
        if (base / name).is_dir():
            return base / name
    return root.parent / name


def find_clip(truth: GroundTruth, root: Path | None = None) -> tuple[Path | None, str]:
    """The clip of ``truth`` and ``""``, or ``None`` and why it is absent.

    Looked up in the corpus folder, then beside the gt file, then inside the installed package
    that ``source.package`` / ``source.path_in_package`` name (an importable package or a
    distribution whose files hold the path; ``pypi_package`` / ``path_in_wheel`` too).
    """
    name = truth.file or f"{truth.name}.mp4"
    tried: list[str] = []
    folder = corpus_dir(root)
    candidates = [folder / name, folder / Path(name).name]
    if truth.gt_path is not None:
        candidates.append(truth.gt_path.parent / Path(name).name)
    for path in candidates:
        if path.is_file():
            return path, ""
    tried.append(str(folder))
    if truth.gt_path is not None:
        tried.append(str(truth.gt_path.parent))
    package = truth.source.get("package") or truth.source.get("pypi_package")
    inner = truth.source.get("path_in_package") or truth.source.get("path_in_wheel")
    if package and inner:
        path = _in_package(str(package), str(inner))
        if path is not None:
            return path, ""
        tried.append(f"package {package}:{inner}")
    return None, f"{name} not found in {', '.join(tried)}"


def _in_package(package: str, inner: str) -> Path | None:
    """``inner`` inside an importable package, or among an installed distribution's files."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            path = Path(base) / inner
            if path.is_file():
                return path
    try:
        dist = distribution(package)
    except PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(inner)))
    if path.is_file():
        return path
    for entry in dist.files or ():  # a path given relative to the package rather than site-packages
        if str(entry).endswith(inner):
            located = Path(str(dist.locate_file(entry)))
            if located.is_file():
                return located
    return None


def load_corpus(files: Sequence[Path] | None = None) -> list[GroundTruth]:
    """The corpus's ground truths; a clip annotated twice counts once (the first file)."""
    truths: dict[str, GroundTruth] = {}
    for path in files if files is not None else corpus_gt_files():
        truth = load_ground_truth(path)
        truths.setdefault(truth.name, truth)
    return list(truths.values())
