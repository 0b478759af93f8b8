"""Frame extraction speed: the scene frames (JPEGs), the object tracker's frames, and both at once.

Scenes come from each video's ``<stem>.gt.json`` cuts (W1 suite, ../shared/media clips), split
further with ``--max-scene-len``; two frames per scene (start and middle), as the pipeline does.
Modes, each timed as wall seconds per video (median of ``--runs``):

- ``frames``: ``sample_scene_frames`` writing JPEGs (the pipeline's frames stage);
- ``objects``: decoding the tracker's frames at 2 fps (YOLO's own pass; no model runs);
- ``both``: one shared pass feeding both (decode once), when the code has ``SharedPass``.

It runs on whatever ``scenescribe`` is importable, so the same script times an older checkout:

    PYTHONPATH=src python benchmarks/bench_frames.py /tmp/w1s/*.mp4
    PYTHONPATH=/tmp/old/src python benchmarks/bench_frames.py /tmp/w1s/*.mp4 --modes frames objects
    python benchmarks/bench_frames.py ../shared/media/real/big_buck_bunny_0_30.webm --max-scene-len 2

On the GPU host (16 cores) the W1 target is the ``both`` total under 5 s:
``python scripts/make_w1_suite.py --out /tmp/w1`` then ``python benchmarks/bench_frames.py /tmp/w1/*.mp4``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from scenescribe.media import probe
from scenescribe.options import FrameOptions, ObjectOptions, ShotOptions
from scenescribe.progress import NullProgress
from scenescribe.records import Scene, VideoInfo
from scenescribe.sampling import sample_scene_frames
from scenescribe.shots import cuts_to_scenes
from scenescribe.shots.base import Cut


def scenes_of(video: VideoInfo, max_scene_len: float) -> list[Scene]:
    gt = Path(video.path).with_suffix(".gt.json")
    cuts: list[Cut] = []
    if gt.exists():
        data = json.loads(gt.read_text())
        fps = float(data.get("video", {}).get("fps") or video.fps)
        cuts = [Cut(int(c["frame"]), int(c["frame"]) / fps) for c in data.get("cuts", [])]
    options = ShotOptions(min_scene_len=0.0, max_scene_len=max_scene_len)
    return cuts_to_scenes(video, cuts, options)


def yolo_size(video: VideoInfo, imgsz: int = 640) -> int:
    long_side, short_side = max(video.width, video.height), min(video.width, video.height)
    return max(2, round(imgsz * short_side / long_side))


def run_frames(video: VideoInfo, scenes: list[Scene], out: Path) -> int:
    refs = [r for _, rs in sample_scene_frames(video, scenes, FrameOptions(), out, NullProgress())
            for r in rs]
    return len(refs)


def _tracker() -> Any:
    from scenescribe import registry

    return registry.create("yolov8n", "objects", options=ObjectOptions(), device="cpu")


def run_objects(video: VideoInfo, scenes: list[Scene]) -> int:
    import scenescribe.media as media

    if hasattr(media, "decode_pass"):
        tracker = _tracker()
        return sum(1 for p in media.decode_pass(video.path, tracker.frame_requests(video, scenes))
                   if p.request == 1)
    # The older tracker decoded every frame and kept 2 per second inside the scenes.
    return sum(1 for f in media.iter_frames(video.path, sample_fps=2.0,
                                            short_side=yolo_size(video))
               if any(s.start <= f.time < s.end for s in scenes))


def run_both(video: VideoInfo, scenes: list[Scene], out: Path) -> int:
    from scenescribe.media import SharedPass
    from scenescribe.sampling import frame_request

    tracker = _tracker()
    shared = SharedPass(video.path)
    frames = shared.subscribe([frame_request(video, scenes, FrameOptions())])
    objects = shared.subscribe(tracker.frame_requests(video, scenes))
    counted = [0]

    def drain() -> None:  # stands in for the tracker: takes every pick as it comes
        counted[0] = sum(1 for p in objects if p.request == 1)

    shared.start()
    thread = threading.Thread(target=drain)
    thread.start()
    try:
        n = sum(len(refs) for _, refs in sample_scene_frames(
            video, scenes, FrameOptions(), out, NullProgress(), picks=frames))
    finally:
        thread.join()
        shared.close()
    return n + counted[0]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--modes", nargs="+", default=["frames", "objects", "both"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--max-scene-len", type=float, default=0.0)
    parser.add_argument("--keep", type=Path, help="write the JPEGs here (to compare checkouts)")
    parser.add_argument("--workers", type=int, help="decoders side by side (default: cores / 4)")
    args = parser.parse_args(argv)
    if args.workers:
        os.environ["SCENESCRIBE_DECODE_WORKERS"] = str(args.workers)
    totals: dict[str, float] = {}
    for path in args.videos:
        video = probe(path)
        scenes = scenes_of(video, args.max_scene_len)
        for mode in args.modes:
            if mode == "both" and not hasattr(sys.modules["scenescribe.media"], "SharedPass"):
                continue
            times, cpu, count = [], [], 0
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as tmp:
                    out = args.keep / path.stem if args.keep else Path(tmp)
                    start, used = time.perf_counter(), _cpu()
                    if mode == "frames":
                        count = run_frames(video, scenes, out)
                    elif mode == "objects":
                        count = run_objects(video, scenes)
                    else:
                        count = run_both(video, scenes, out)
                    times.append(time.perf_counter() - start)
                    cpu.append(_cpu() - used)
            seconds = statistics.median(times)
            totals[mode] = totals.get(mode, 0.0) + seconds
            print(f"{path.name:36s} {mode:8s} {len(scenes):4d} scenes {count:5d} frames "
                  f"{seconds:7.2f} s {count / seconds:8.1f} frames/s {statistics.median(cpu):7.2f} CPU-s "
                  f"({video.width}x{video.height}, {video.duration:.0f} s)", flush=True)
    for mode, seconds in totals.items():
        print(f"{'total':36s} {mode:8s} {seconds:7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
