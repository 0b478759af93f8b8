"""How ``hsvcut``'s constants were chosen: a grid over the shot corpus, pooled, and leave one
category out.

Each clip is decoded once (as the detector decodes it) and every frame's measures are kept
(cached under ``--cache``): the HSV channel changes, brightness, saturation, and the three checks
the rule asks of candidates (colour-histogram, brightness-histogram and least 4x4-block change).
Every setting of the grid then replays ``hsvrule.Rule`` itself over those measures, followed by
``cuts_to_scenes``' min-length rule, and is scored at ±1 frame against the ground truth.
The setting with the highest pooled hard-cut F1 wins (ties: the first in grid order, which lists
the previous default's values first). Leave one category out: for each category, the setting is
chosen so on the other categories' clips only and scored on that category's; the held-out
scores, pooled, estimate the F1 on footage of a kind the constants never saw.

    python benchmarks/sweep_hsvcut.py                  # grid, best setting, leave-one-out
    python benchmarks/sweep_hsvcut.py --markdown out.md
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scenescribe.shots import evaluation as ev
from scenescribe.shots import fast, hsvrule

# Grid axes, the previous default's value first. Ratio 3 and window 2 stay PySceneDetect's.
GRID: dict[str, list[Any]] = {
    "min_content": [18.0, 15.0],
    "hist_min": [0.2, 0.15],
    "low_ratio": [2.0, 1.5],
    "mono": [(0.0, 0.2), (8.0, 0.12), (8.0, 0.2)],  # (mono_sat, mono_hist_min)
    "luma_min": [0.0, 0.08, 0.12],
    "block_min": [0.0, 5.0],
    "quiet": [(1e9, 1e9), (20.0, 8.0)],  # (quiet_ratio, quiet_min)
}
_COLUMNS = ("index", "time", "dh", "ds", "dv", "brightness", "saturation", "change", "luma",
            "block")


def measures(clip: Path, cache: Path, width: int = 256) -> tuple[np.ndarray, float]:
    """Per-frame measures of ``clip`` (rows of ``_COLUMNS``) and its frame rate, cached."""
    import cv2

    from scenescribe.media import iter_frames, probe

    stat = clip.stat()
    path = cache / f"{clip.stem}-{stat.st_size}-{int(stat.st_mtime)}-{width}-v1.npz"
    if path.exists():
        data = np.load(path)
        return data["rows"], float(data["fps"])
    fps = probe(clip).fps or 25.0
    rows = []
    for f in fast.frame_features(iter_frames(str(clip), pixel_format="yuv420p"), width):
        dh = ds = dv = 0.0
        if f.prev_hsv is not None and f.hsv is not None:
            dh, ds, dv, _ = cv2.mean(cv2.absdiff(f.hsv, f.prev_hsv))
        rows.append((f.index, f.time, dh, ds, dv, f.brightness, f.saturation, f.change,
                     f.luma_change, f.block_change))
    array = np.array(rows, dtype=np.float64)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, rows=array, fps=fps)
    return array, fps


def replay(rows: np.ndarray, fps: float, tuning: hsvrule.Tuning,
           min_scene_len: float = 0.2) -> list[int]:
    """Scene starts of ``_Rule`` over cached measures, after ``cuts_to_scenes``' min length."""
    rule = hsvrule.Rule(tuning, fps, max(1, round(min_scene_len * fps)))
    for index, time, dh, ds, dv, bright, sat, change, luma, block in rows:
        score = dv if sat < tuning.mono_sat else (dh + ds + dv) / 3.0
        rule.add(hsvrule.Measures(int(index), float(time), float(score), float(bright),
                             known_change=float(change), saturation=float(sat),
                             known_luma=float(luma), known_block=float(block)))
    duration = len(rows) / fps
    starts = [(0, 0.0)]
    for cut in sorted(rule.finish(), key=lambda c: c.frame):
        if cut.frame > starts[-1][0] and cut.time < duration \
                and cut.time - starts[-1][1] >= min_scene_len:
            starts.append((cut.frame, cut.time))
    if len(starts) > 1 and duration - starts[-1][1] < min_scene_len:
        starts.pop()
    return [frame for frame, _ in starts[1:]]


def tunings() -> list[tuple[str, hsvrule.Tuning]]:
    """Every setting of ``GRID``, named by what differs from the previous default."""
    found = []
    for values in itertools.product(*GRID.values()):
        v = dict(zip(GRID, values, strict=True))
        (mono_sat, mono_hist), (quiet_ratio, quiet_min) = v.pop("mono"), v.pop("quiet")
        t = replace(fast.HsvCutDetector.PREVIOUS, **v, mono_sat=mono_sat,
                    mono_hist_min=mono_hist, quiet_ratio=quiet_ratio, quiet_min=quiet_min)
        found.append((describe(t), t))
    return found


def describe(t: hsvrule.Tuning) -> str:
    base = fast.HsvCutDetector.PREVIOUS
    diff = [f"{k}={v:g}" for k, v in hsvrule.asdict(t).items() if v != getattr(base, k)]
    return ", ".join(diff) or "previous default"


def best(table: dict[str, list[ev.Score]], clips: list[int]) -> str:
    """The setting with the highest pooled F1 over ``clips`` (first in grid order on ties)."""
    return max(table, key=lambda name: ev.pooled(table[name][i] for i in clips).f1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "XDG_CACHE_HOME", Path.home() / ".cache")) / "scenescribe" / "hsvcut-sweep")
    parser.add_argument("--markdown", type=Path, help="also write the result to this file")
    args = parser.parse_args(argv)

    corpus: list[tuple[ev.GroundTruth, np.ndarray, float]] = []
    for truth in ev.load_corpus():
        clip, why = ev.find_clip(truth)
        if clip is None:
            print(f"skipped {truth.name}: {why}", file=sys.stderr)
            continue
        corpus.append((truth, *measures(clip, args.cache)))
    grid = tunings()
    print(f"{len(grid)} settings x {len(corpus)} clips", file=sys.stderr)
    table: dict[str, list[ev.Score]] = {}
    for n, (name, t) in enumerate(grid):
        if n % 50 == 0:
            print(f"  {n}/{len(grid)}", file=sys.stderr, flush=True)
        table[name] = [ev.score(replay(rows, fps, t), truth) for truth, rows, fps in corpus]
    everything = list(range(len(corpus)))
    lines = ["| chosen on | setting | pooled F1 on those clips | held-out F1 |", "|---|---|---|---|"]
    winner = best(table, everything)
    chosen = describe(fast.HsvCutDetector.TUNING)
    lines.insert(0, f"Grid: {len(grid)} settings over {len(corpus)} clips. Highest pooled F1: "
                    f"`{winner}` ({ev.pooled(table[winner]).f1:.3f}); the default `{chosen}`: "
                    f"{ev.pooled(table[chosen]).f1 if chosen in table else float('nan'):.3f}.\n")
    held_out: list[ev.Score] = []
    categories = sorted({truth.category for truth, *_ in corpus})
    for category in categories:
        inside = [i for i, (t, *_) in enumerate(corpus) if t.category == category]
        rest = [i for i in everything if i not in inside]
        pick = best(table, rest)
        scores = [table[pick][i] for i in inside]
        held_out += scores
        lines.append(f"| all but {category} | `{pick}` | {ev.pooled(table[pick][i] for i in rest).f1:.3f}"
                     f" | {category}: {ev.pooled(scores).f1:.3f} "
                     f"({sum(s.tp for s in scores)}/{sum(s.cuts for s in scores)}, "
                     f"{sum(s.fp for s in scores)} false) |")
    total = ev.pooled(held_out)
    lines.append(f"\nLeave one category out, held-out scores pooled: precision "
                 f"{total.precision:.3f}, recall {total.recall:.3f}, F1 **{total.f1:.3f}**.")
    cats = ev.by_category((t, table[winner][i]) for i, (t, *_) in enumerate(corpus))
    lines.append("\nChosen setting per category: " + ", ".join(
        f"{c} {s.f1:.3f}" for c, s in cats.items()))
    report = "\n".join(lines)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
