"""Frame extraction speed: the scene frames (JPEGs), the object tracker's frames, and both at once.

Scenes come from each video's ``<stem>.gt.json`` cuts (W1 suite, ../shared/media clips), split
further with ``--max-scene-len``; two frames per scene (start and middle), as the pipeline does.
Modes, each timed as wall seconds per video (median of ``--runs``):

- ``frames``: ``sample_scene_frames`` writing JPEGs (the pipeline's frames stage);
- ``picks``: the same decode pass alone, nothing encoded or written; ``nosync``: ``frames``
  without flushing each file to disk (together they split the stage's seconds); ``synced``:
  ``frames`` with each JPEG flushed to disk, as the stage wrote them before 2026-12-02e;
- ``objects``: decoding the tracker's frames at 2 fps (YOLO's own pass; no model runs);
- ``both``: one shared pass feeding both (decode once), when the code has ``SharedPass``;
- ``track``: the real tracker (YOLO + ByteTrack) on a pass of its own: its frames/s;
- ``first`` and ``once``: what the run's frames+objects node does over all the videos (side by
  side with ``--passes``): the frames first then the tracker, or one shared pass feeding both
  (the older code's ``sample_and_track`` for a before figure). Each prints the frames' seconds
  (summed over videos, as ``bench.json`` sums a stage), the tracker's, the node's wall clock and
  the tracker's frames/s (every frame it tracked over its seconds; model calls apart).

It runs on whatever ``scenescribe`` is importable, so the same script times an older checkout:

    PYTHONPATH=src python benchmarks/bench_frames.py /tmp/w1s/*.mp4
    PYTHONPATH=/tmp/old/src python benchmarks/bench_frames.py /tmp/w1s/*.mp4 --modes frames objects
    python benchmarks/bench_frames.py ../shared/media/real/big_buck_bunny_0_30.webm --max-scene-len 2

On the GPU host (16 cores) the W1 target is the frames' total under 5 s:
``python scripts/make_w1_suite.py --out /tmp/w1`` then
``python benchmarks/bench_frames.py /tmp/w1/*.mp4 --modes frames track first once --device cuda``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


WAITS: dict[str, float] = {}  # the last frames run's waits, where the code reports them


def run_frames(video: VideoInfo, scenes: list[Scene], out: Path) -> int:
    from scenescribe import sampling

    extra: dict[str, Any] = {}
    waits_type = getattr(sampling, "FrameWaits", None)  # absent in older checkouts
    if waits_type is not None:
        extra["waits"] = waits_type()
    refs = [r for _, rs in sample_scene_frames(video, scenes, FrameOptions(), out, NullProgress(),
                                               **extra)
            for r in rs]
    WAITS.clear()
    if "waits" in extra:
        WAITS.update(decode=extra["waits"].decode_s, write=extra["waits"].write_s)
    return len(refs)


def run_picks(video: VideoInfo, scenes: list[Scene]) -> int:
    """The frames stage's decode pass alone (same decoders): frames picked and converted to
    their size, nothing encoded or written."""
    from scenescribe import sampling
    from scenescribe.media import decode_pass

    share = getattr(sampling, "pass_share", None)
    workers, threads = (share(1, frames_only=True) if share is not None
                        and "frames_only" in inspect.signature(share).parameters else (None, 0))
    request = sampling.frame_request(video, scenes, FrameOptions())
    return sum(1 for _ in decode_pass(video.path, [request], workers=workers, threads=threads))


def run_frames_unsynced(video: VideoInfo, scenes: list[Scene], out: Path) -> int:
    """``frames`` with every file written but none flushed to disk (``os.fsync`` a no-op): set
    beside ``frames`` and ``picks``, it splits the stage into decoding, JPEG encoding and
    writing, and the disk's flushes."""
    from unittest import mock

    with mock.patch("os.fsync", lambda fd: None):
        return run_frames(video, scenes, out)


def run_frames_synced(video: VideoInfo, scenes: list[Scene], out: Path) -> int:
    """``frames`` with every JPEG flushed to disk before its rename (the stage before it
    stopped doing so)."""
    from unittest import mock

    from scenescribe import store

    def durable(path: Path, data: bytes, durable: bool = True) -> None:
        store.atomic_write_bytes(path, data, durable=True)

    with mock.patch("scenescribe.sampling.atomic_write_bytes", durable):
        return run_frames(video, scenes, out)


_SETTINGS: dict[str, Any] = {"device": "cpu", "model_dir": None, "batch": 0}
_MODEL: dict[str, Any] = {}  # the loaded weights, shared by every tracker made here


def _tracker() -> Any:
    from scenescribe import registry

    model_dir = _SETTINGS["model_dir"]
    tracker = registry.create("yolov8n", "objects", options=ObjectOptions(),
                              device=_SETTINGS["device"],
                              **({"model_dir": Path(model_dir)} if model_dir else {}))
    if _SETTINGS["batch"] and hasattr(type(tracker), "_batch"):
        tracker.batch_size = _SETTINGS["batch"]
    return tracker


class _Counted:
    """The real tracker, loaded once, counting the frames its model saw and the seconds there."""

    def __init__(self) -> None:
        self.tracker = _tracker()
        if "model" not in _MODEL:
            start = time.perf_counter()
            self.tracker.load()
            _MODEL["model"], _MODEL["load_s"] = self.tracker.model, time.perf_counter() - start
        self.tracker.model = _MODEL["model"]
        self.frames, self.model_s = 0, 0.0
        lock = threading.Lock()
        for name in ("detect", "detect_track"):  # batched (new) or per scene (older code)
            real = getattr(self.tracker, name, None)
            if real is not None:
                setattr(self.tracker, name, self._count(real, lock))

    def _count(self, real: Any, lock: threading.Lock) -> Any:
        def counted(images: list[Any], *rest: Any) -> Any:
            start = time.perf_counter()
            out = real(images, *rest)
            with lock:
                self.frames += len(images)
                self.model_s += time.perf_counter() - start
            return out
        return counted


def run_objects(video: VideoInfo, scenes: list[Scene]) -> int:
    import scenescribe.media as media

    tracker = _tracker() if hasattr(media, "decode_pass") else None
    if tracker is not None and hasattr(tracker, "frame_requests"):  # 2026-12-02 to 12-04 code
        return sum(1 for p in media.decode_pass(video.path, tracker.frame_requests(video, scenes))
                   if p.request == 1)
    if tracker is not None:  # the detections stage's pass: every tick inside the scenes
        from scenescribe.objects.detected import scene_ticks

        ticks = tuple(k / 2.0 for k in scene_ticks(scenes, 2.0))
        return sum(1 for _ in media.decode_pass(video.path, [media.FrameRequest(
            ticks, media.TICK, short_side=yolo_size(video))]))
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


def run_track(video: VideoInfo, scenes: list[Scene], counted: _Counted) -> int:
    before = counted.frames
    for _ in counted.tracker.track_scenes(video, scenes, NullProgress()):
        pass
    return counted.frames - before


def run_node(items: list[tuple[VideoInfo, list[Scene]]], root: Path, mode: str,
             passes: int) -> dict[str, Any]:
    """The frames+objects node over every video: ``first`` or ``once`` (one shared pass)."""
    from scenescribe import sampling

    if not hasattr(sampling, "sample_and_track"):
        raise SystemExit("this checkout runs frames and objects as stages of their own: "
                         "use --modes frames objects track")
    counted = _Counted()
    params = inspect.signature(sampling.sample_and_track).parameters
    extra: dict[str, Any] = {}
    if "shared" in params:
        extra = {"shared": mode == "once", "passes": passes}
    elif mode == "first":
        raise SystemExit("this checkout has no frames-first mode")
    rows: list[dict[str, Any]] = []

    def one(item: tuple[VideoInfo, list[Scene]]) -> None:
        video, scenes = item
        report: dict[str, Any] = {}
        if "report" in params:
            extra["report"] = report
        frames_s, objects_s = sampling.sample_and_track(
            video, scenes, FrameOptions(), root / Path(video.path).stem, counted.tracker, scenes,
            NullProgress(), on_frames=lambda i, r: None, on_objects=lambda i, s: None, **extra)
        rows.append({"video": Path(video.path).name, "frames_s": frames_s,
                     "objects_s": objects_s, "spilled_at": report.get("spilled_at")})

    start = time.perf_counter()
    with ThreadPoolExecutor(max(1, passes)) as pool:
        list(pool.map(one, items))
    wall = time.perf_counter() - start
    tracked = sum(r["objects_s"] for r in rows)
    return {"rows": rows, "wall_s": wall, "frames_s": sum(r["frames_s"] for r in rows),
            "objects_s": tracked, "tracker_frames": counted.frames,
            "model_s": counted.model_s, "load_s": _MODEL.get("load_s", 0.0)}


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
    parser.add_argument("--workers", type=int, help="decoders side by side per pass (default: "
                        "one per core up to 16 for the frames alone, cores / 4 for the tracker)")
    parser.add_argument("--device", default="cpu", help="the tracker's device (cpu, cuda)")
    parser.add_argument("--model-dir", help="where yolo/yolov8n.pt is (default: the registry's)")
    parser.add_argument("--batch", type=int, default=0, help="YOLO frames per model call")
    parser.add_argument("--passes", type=int, default=0,
                        help="videos side by side in first/once (default: cores / 8)")
    args = parser.parse_args(argv)
    if args.workers:
        os.environ["SCENESCRIBE_DECODE_WORKERS"] = str(args.workers)
        os.environ["SCENESCRIBE_FRAME_WORKERS"] = str(args.workers)
    _SETTINGS.update(device=args.device, model_dir=args.model_dir, batch=args.batch)
    totals: dict[str, float] = {}
    items = [(v, scenes_of(v, args.max_scene_len)) for v in map(probe, args.videos)]
    for mode in [m for m in args.modes if m in ("first", "once")]:
        _node(items, mode, args)
    counted = _Counted() if "track" in args.modes else None
    for path, (video, scenes) in zip(args.videos, items, strict=True):
        for mode in [m for m in args.modes if m not in ("first", "once")]:
            if mode == "both" and not hasattr(sys.modules["scenescribe.media"], "SharedPass"):
                continue
            times, cpu, count = [], [], 0
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as tmp:
                    out = args.keep / path.stem if args.keep else Path(tmp)
                    start, used = time.perf_counter(), _cpu()
                    if mode == "frames":
                        count = run_frames(video, scenes, out)
                    elif mode == "picks":
                        count = run_picks(video, scenes)
                    elif mode == "nosync":
                        count = run_frames_unsynced(video, scenes, out)
                    elif mode == "synced":
                        count = run_frames_synced(video, scenes, out)
                    elif mode == "objects":
                        count = run_objects(video, scenes)
                    elif mode == "track":
                        assert counted is not None
                        count = run_track(video, scenes, counted)
                    else:
                        count = run_both(video, scenes, out)
                    times.append(time.perf_counter() - start)
                    cpu.append(_cpu() - used)
            seconds = statistics.median(times)
            totals[mode] = totals.get(mode, 0.0) + seconds
            waited = (f"; waited for frames {WAITS['decode']:.2f} s, for writes "
                      f"{WAITS['write']:.2f} s" if mode in ("frames", "nosync", "synced") and WAITS else "")
            print(f"{path.name:36s} {mode:8s} {len(scenes):4d} scenes {count:5d} frames "
                  f"{seconds:7.2f} s {count / seconds:8.1f} frames/s {statistics.median(cpu):7.2f} CPU-s "
                  f"({video.width}x{video.height}, {video.duration:.0f} s){waited}", flush=True)
    for mode, seconds in totals.items():
        print(f"{'total':36s} {mode:8s} {seconds:7.2f} s")
    if counted is not None and counted.model_s:
        print(f"{'tracker model calls':36s} {counted.frames:5d} frames {counted.model_s:7.2f} s "
              f"{counted.frames / counted.model_s:8.1f} frames/s (batch "
              f"{getattr(counted.tracker, 'batch_size', '?')}, {args.device})")
    return 0


def _node(items: list[tuple[VideoInfo, list[Scene]]], mode: str, args: Any) -> None:
    from scenescribe import sampling

    passes = args.passes or 1
    if not args.passes and mode == "once" and hasattr(sampling, "video_passes"):
        os.environ["SCENESCRIBE_DECODE_ONCE"] = "1"  # the run's default for that mode
        passes = sampling.video_passes(len(items))
        os.environ.pop("SCENESCRIBE_DECODE_ONCE")
    with tempfile.TemporaryDirectory() as tmp:
        r = run_node(items, args.keep or Path(tmp), mode, passes)
    for row in r["rows"]:
        spill = "" if row["spilled_at"] is None else f" (tracker spilled at {row['spilled_at']:.1f} s)"
        print(f"{row['video']:36s} {mode:8s} frames {row['frames_s']:7.2f} s  objects "
              f"{row['objects_s']:7.2f} s{spill}", flush=True)
    print(f"{'node':36s} {mode:8s} frames {r['frames_s']:7.2f} s  objects {r['objects_s']:7.2f} s  "
          f"wall {r['wall_s']:7.2f} s  tracker {r['tracker_frames']} frames "
          f"{r['tracker_frames'] / max(r['objects_s'], 1e-9):7.1f} frames/s (model calls "
          f"{r['model_s']:.2f} s, {r['tracker_frames'] / max(r['model_s'], 1e-9):.1f} frames/s; "
          f"{passes} side by side, {args.device}, load {r['load_s']:.1f} s apart)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
