"""YOLOv8n with ByteTrack (real weights) on a clip built at test time from the real photos in the
ultralytics wheel (``photo_clip.py``), plus a fresh interpreter proving ultralytics stays offline
and inside our cache. The summaries alone: ``test_objects_summary.py``; through the pipeline:
``test_objects_pipeline.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, ROOT, media
from photo_clip import FPS, SIZE
from scenescribe import registry
from scenescribe.errors import InputError
from scenescribe.media import probe
from scenescribe.objects.detections import Detections
from scenescribe.options import ObjectOptions
from scenescribe.progress import NullProgress
from scenescribe.records import ObjectSummary, Scene, VideoInfo


def _scene(index: int, start_frame: int, end_frame: int) -> Scene:
    return Scene(index, start_frame / FPS, end_frame / FPS, start_frame, end_frame)


def _track(backend: object, video: VideoInfo,
           scenes: list[Scene]) -> dict[int, dict[str, ObjectSummary]]:
    out = list(backend.track_scenes(video, scenes, NullProgress()))  # type: ignore[attr-defined]
    assert [i for i, _ in out] == [s.index for s in scenes]  # every scene given, in order
    for _, summaries in out:
        keys = [(-o.max_count, -o.confidence) for o in summaries]
        assert keys == sorted(keys)
        assert all(0 < o.confidence <= 1 and 1 <= o.max_count <= o.tracks for o in summaries)
    return {i: {o.label: o for o in summaries} for i, summaries in out}


def test_yolo_tracks_per_scene_on_real_photos(tracker: object, photo_clip: VideoInfo,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    frames: list[Detections] = []
    track_frame = tracker.track_frame  # type: ignore[attr-defined]

    def recording(state: object, frame: object) -> Detections:
        frames.append(track_frame(state, frame))
        return frames[-1]

    monkeypatch.setattr(tracker, "track_frame", recording)
    result = _track(tracker, photo_clip, [_scene(0, 0, 30), _scene(1, 30, 60)])
    assert [d.time for d in frames] == pytest.approx([0.5 * i for i in range(12)])
    for first in (frames[0], frames[6]):  # the tracker restarts at each scene: ids from 1
        assert sorted(first.tracker_id.tolist()) == list(range(1, len(first) + 1))
    bus_scene, zidane_scene = result[0], result[1]
    assert {"bus", "person"} <= set(bus_scene)
    assert bus_scene["bus"].max_count == 1 and bus_scene["bus"].tracks <= 2
    assert 3 <= bus_scene["person"].max_count <= 4 and bus_scene["person"].tracks <= 6
    assert "bus" not in zidane_scene
    assert zidane_scene["person"].max_count == 2
    assert 2 <= zidane_scene["person"].tracks <= 3  # tracks restarted at the cut


def test_yolo_batches_across_scenes_with_the_records_of_one_frame_at_a_time(
        tracker: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real clip (people walking past a fixed camera), 2.5 s scenes: detection in batches of 8
    that cross scene boundaries gives per-scene records identical to batches of 1, because
    ByteTrack still takes the frames one by one, in order, restarting at each scene."""
    video = probe(media("real/intel_one-by-one-person-detection.mp4"))
    scenes = [Scene(i, 2.5 * i, 2.5 * (i + 1), 25 * i, 25 * (i + 1)) for i in range(5)]
    detect = tracker.detect  # type: ignore[attr-defined]
    calls: list[int] = []

    def counting(images: list[np.ndarray]) -> list[object]:
        calls.append(len(images))
        return detect(images)  # type: ignore[no-any-return]

    monkeypatch.setattr(tracker, "detect", counting)
    records = {}
    for batch in (1, 8):
        monkeypatch.setattr(tracker, "batch_size", batch)
        calls.clear()
        out = list(tracker.track_scenes(video, scenes, NullProgress()))  # type: ignore[attr-defined]
        records[batch] = [(i, [o.to_dict() for o in s]) for i, s in out]
        assert sum(calls) == 25 and max(calls) == batch  # 2 fps over 12.5 s, each frame once
    assert len(calls) == 4  # 8 + 8 + 8 + 1: batches ran across the 5-frame scenes
    assert records[1] == records[8]
    assert [i for i, _ in records[8]] == [0, 1, 2, 3, 4]
    people = [next((o for o in s if o["label"] == "person"), None) for _, s in records[8]]
    assert sum(p is not None for p in people) >= 2  # real detections, not empty scenes
    assert all(p is None or p["tracks"] >= p["max_count"] >= 1 for p in people)


def test_yolo_tracks_two_videos_at_once_as_one_after_the_other(
        tracker: object, photo_clip: VideoInfo) -> None:
    """``concurrent_videos``: two videos tracked from two threads at once (model calls take
    turns, each scene its own ByteTrack) give the records each gives alone."""
    import threading

    real = probe(media("real/intel_one-by-one-person-detection.mp4"))
    jobs = {"photos": (photo_clip, [_scene(0, 0, 30), _scene(1, 30, 60)]),
            "real": (real, [Scene(i, 2.5 * i, 2.5 * (i + 1), 25 * i, 25 * (i + 1))
                            for i in range(5)])}

    def records(name: str) -> list[tuple[int, list[dict[str, object]]]]:
        video, scenes = jobs[name]
        out = tracker.track_scenes(video, scenes, NullProgress())  # type: ignore[attr-defined]
        return [(i, [o.to_dict() for o in s]) for i, s in out]

    alone = {name: records(name) for name in jobs}
    together: dict[str, object] = {}
    threads = [threading.Thread(target=lambda n=name: together.__setitem__(n, records(n)))
               for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tracker.concurrent_videos  # type: ignore[attr-defined]
    assert together == alone
    assert any(s for _, s in alone["real"]) and any(s for _, s in alone["photos"])


def test_yolo_short_scenes_and_subset(tracker: object, photo_clip: VideoInfo) -> None:
    """At 1 fps the 0.5 s and 0.3 s scenes hold no sampled time: each is still looked at once.
    Only the scenes given are tracked (a resumed run passes what its checkpoint lacks)."""
    backend = registry.create("yolov8n", "objects", options=ObjectOptions(sample_fps=1.0),
                              device="cpu", model_dir=MODELS)
    backend.model = tracker.model  # type: ignore[attr-defined]  # reuse the loaded weights
    scenes = [_scene(1, 22, 27), _scene(2, 27, 30), _scene(4, 45, 60)]
    result = _track(backend, photo_clip, scenes)
    assert {"bus", "person"} <= set(result[1]) and {"bus", "person"} <= set(result[2])
    assert "bus" not in result[4] and result[4]["person"].max_count == 2


def test_audio_only_and_undecodable_video(tracker: object) -> None:
    audio = media("bad_inputs/audio_only.wav")
    info = VideoInfo(str(audio), audio.stat().st_size, "wav", 5.0, has_video=False)
    scenes = [Scene(0, 0.0, 2.0, 0, 2), Scene(1, 2.0, 5.0, 2, 5)]
    assert list(tracker.track_scenes(info, scenes, NullProgress())) == [  # type: ignore[attr-defined]
        (0, []), (1, [])]
    bad = media("bad_inputs/not_a_video.mp4")
    info = VideoInfo(str(bad), bad.stat().st_size, "mp4", 5.0, has_video=True, width=64,
                     height=36, fps=25.0)
    with pytest.raises(InputError, match="not_a_video"):
        list(tracker.track_scenes(info, scenes, NullProgress()))  # type: ignore[attr-defined]


# ---------------------------------------------------------------- offline, in a fresh process

_OFFLINE_PROBE = """
import json, sys
seen = []
def audit(event, args):
    if event.startswith("socket.") and event != "socket.__new__":
        seen.append(f"{event} {args!r}"[:200])
    elif event == "subprocess.Popen" and "ldconfig" not in str(args[0]):
        seen.append(f"{event} {args[1]!r}"[:200])  # e.g. pip installing lap
    elif event == "open" and str(args[0]).endswith((".ttf", ".otf")):
        seen.append(f"font {args[0]}")
sys.addaudithook(audit)
from scenescribe import registry
from scenescribe.media import probe
from scenescribe.options import ObjectOptions
from scenescribe.progress import NullProgress
from scenescribe.records import Scene
video = probe(sys.argv[1])
backend = registry.create("yolov8n", "objects", options=ObjectOptions(), device="cpu")
scenes = [Scene(0, 0.0, 1.0, 0, 10), Scene(1, 5.0, 6.0, 50, 60)]  # 2 frames each: it is the
# loading and the tracker's first use (ByteTrack imports lap) that could reach out
labels = [[o.label for o in s] for _, s in backend.track_scenes(video, scenes, NullProgress())]
from ultralytics.utils import SETTINGS
import os
print(json.dumps({"seen": seen, "labels": labels, "settings": str(SETTINGS.file),
                  "sync": SETTINGS["sync"], "omp": os.environ.get("OMP_NUM_THREADS")}))
"""


def test_ultralytics_offline_and_in_our_cache(photo_clip: VideoInfo, tmp_path: Path) -> None:
    """A fresh interpreter without pytest (so ultralytics' telemetry would be live) and without
    YOLO_OFFLINE set by conftest: no socket use, no DNS, no pip, no font, settings in our cache."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("YOLO_") and k != "OMP_NUM_THREADS"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_PROBE, photo_clip.path],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["seen"] == []
    assert Path(report["settings"]).is_relative_to(tmp_path / "cache" / "scenescribe")
    assert report["sync"] is False
    assert report["omp"] is None  # ultralytics' OMP_NUM_THREADS=1 does not leak out
    assert "bus" in report["labels"][0] and "person" in report["labels"][1]


# ---------------------------------------------------------------- detections apart from tracking

def test_tracking_stored_detections_gives_what_tracking_at_once_gives(
        tracker: object, photo_clip: VideoInfo) -> None:
    """The whole clip detected without scenes (the ``detections`` stage), its boxes written to
    JSON and read back, then tracked within scenes found later: the very records of
    ``track_scenes`` on those scenes, the 0.3 s scene (no tick in it) seen at its midpoint."""
    from scenescribe.objects.detected import VideoDetections, chunk_line, in_time_order, parse_chunk

    scenes = [_scene(0, 0, 27), _scene(1, 27, 30), _scene(2, 30, 60)]
    at_once = [(i, [o.to_dict() for o in s]) for i, s in
               tracker.track_scenes(photo_clip, scenes, NullProgress())]  # type: ignore[attr-defined]
    ticks = range(tracker.ticks(photo_clip))  # type: ignore[attr-defined]
    assert len(ticks) == 12  # 6 s at 2 fps
    found = list(tracker.detect_frames(photo_clip, ticks, NullProgress()))  # type: ignore[attr-defined]
    assert [f.tick for f in found] == list(ticks) and all(f.warp is None for f in found)
    stored = parse_chunk(json.loads(json.dumps(chunk_line(0, found))))
    for a, b in zip(found, stored, strict=True):
        assert a.time == b.time and a.shape == b.shape and np.array_equal(a.boxes, b.boxes)
    detected = VideoDetections(in_time_order(stored), tracker.names)  # type: ignore[attr-defined]
    later = [(i, [o.to_dict() for o in s]) for i, s in
             tracker.track_detected(photo_clip, scenes, detected, NullProgress())]  # type: ignore[attr-defined]
    assert later == at_once
    assert {o["label"] for o in later[1][1]} >= {"bus", "person"}  # the midpoint's boxes


def test_botsort_replays_the_camera_motion_measured_while_detecting(photo_clip: VideoInfo) -> None:
    """BoT-SORT compensates camera motion from the frames themselves: the warps are measured
    during detection (the photos pan, so they are not the identity) and replayed on tracking,
    so the tracks are those of a run that had the frames (ultralytics' own loop here)."""
    backend = registry.create("yolov8n", "objects", options=ObjectOptions(tracker="botsort"),
                              device="cpu", model_dir=MODELS)
    found = list(backend.detect_frames(photo_clip, range(6), NullProgress()))  # type: ignore[attr-defined]
    assert all(f.warp is not None for f in found)
    assert not np.allclose(found[2].warp, np.eye(2, 3))
    from ultralytics.engine.results import Boxes

    replayed, direct, blind = (backend.new_tracker() for _ in range(3))  # type: ignore[attr-defined]
    shown = {p.frame.time: p.frame.image for p in _tick_frames(photo_clip, 6)}
    moved = False
    for frame in found:
        ours = backend.track_frame(replayed, frame)  # type: ignore[attr-defined]
        theirs = direct.update(Boxes(frame.boxes, frame.shape),
                               np.ascontiguousarray(shown[frame.time][..., ::-1]))
        without = backend.track_frame(blind, dataclasses.replace(frame, warp=None))  # type: ignore[attr-defined]
        if len(theirs):
            assert np.array_equal(ours.tracker_id, theirs[:, 4].astype(np.int64))
            assert np.allclose(ours.xyxy, theirs[:, :4], atol=1e-3)
        else:
            assert not ours.tracked.any()
        moved |= len(without) == len(ours) and not np.allclose(without.xyxy, ours.xyxy, atol=1e-3)
    assert moved  # the warps changed the tracks: the comparison above could fail
    backend.unload()


def _tick_frames(video: VideoInfo, count: int) -> list:
    from scenescribe.media import TICK, FrameRequest, decode_pass

    size = round(640 * min(SIZE) / max(SIZE))
    return list(decode_pass(video.path, [FrameRequest(tuple(k / 2 for k in range(count)), TICK,
                                                      short_side=size)]))


