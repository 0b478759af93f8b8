"""YOLO detection with ByteTrack tracking through ultralytics, summarised per scene.

Frames sampled at ``sample_fps`` (the first frame at or after each tick) are detected in
batches that run across scene boundaries (``batch_size`` frames per model call), then fed to
ByteTrack one frame at a time, in order, so the records are those of a frame-by-frame run; the
tracker restarts at every scene boundary so track ids and counts are per scene. A scene that
no sampled frame falls in (shorter than ``1 / sample_fps``) is sampled once at its midpoint.
``frame_requests`` says which frames that takes, so one decode pass can serve the tracker and
the scene frames together (``sampling.sample_and_track``); ``track_scenes`` runs a pass of its
own on a background thread, so decoding overlaps inference.

Ultralytics is kept off the network: weights are an explicit local path, its settings file lives
in scenescribe's cache (``YOLO_CONFIG_DIR``), ``YOLO_OFFLINE`` stops its DNS probe and telemetry,
``YOLO_AUTOINSTALL`` stops it pip-installing ``lap``, and analytics sync is switched off.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from scenescribe.backend import import_names, torch_threads_kept
from scenescribe.errors import BackendUnavailableError, ConfigError, ModelNotFoundError
from scenescribe.gpu_share import launching
from scenescribe.knobs import env_count
from scenescribe.media import SHOWN, TICK, DecodedFrame, FrameRequest, Pick, decode_pass, frames_at
from scenescribe.media.readahead import ReadAhead
from scenescribe.objects.base import ObjectTracker
from scenescribe.objects.detections import Detections
from scenescribe.objects.summary import SceneObjects
from scenescribe.progress import Progress
from scenescribe.records import ObjectSummary, Scene, VideoInfo

log = logging.getLogger("scenescribe.objects")

PREFETCH_BATCHES = 2  # decoded batches buffered ahead of the model (a 64-frame batch: 45 MB)


def ultralytics_config_dir() -> Path:
    """Where ultralytics keeps its settings file: inside scenescribe's cache, not ~/.config."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "scenescribe" / "ultralytics"


def import_ultralytics() -> Any:
    """Import ultralytics configured offline, with its settings in our cache directory."""
    ours = "ultralytics" not in sys.modules
    if not ours:
        log.debug("ultralytics was imported before scenescribe could configure it; its settings "
                  "file and online checks are the caller's")
    else:
        os.environ["YOLO_CONFIG_DIR"] = str(ultralytics_config_dir())
        os.environ["YOLO_OFFLINE"] = "1"  # no DNS probe, so no telemetry and no downloads
        os.environ["YOLO_AUTOINSTALL"] = "false"  # never pip-install a missing requirement
        os.environ.setdefault("YOLO_VERBOSE", "false")  # its logger prints to stdout
        # ultralytics sets OMP_NUM_THREADS=1 (a training default) before it imports torch,
        # which would leave torch on one thread for the whole process: import torch first, and
        # take the variable back out so child processes don't inherit it either.
        omp = os.environ.get("OMP_NUM_THREADS")
        importlib.import_module("torch")
        importlib.import_module("ultralytics")
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    import ultralytics
    from ultralytics.utils import SETTINGS

    if ours and SETTINGS.get("sync"):
        SETTINGS.update(sync=False)  # written to our own settings file, never the user's
    return ultralytics


@contextlib.contextmanager
def timing_without_syncs() -> Iterator[None]:
    """Ultralytics times each predict step with a device-wide ``torch.cuda.synchronize``
    (``ops.Profile``): six per call, each waiting for every stream of the device, the caption
    stage's too (py-spy on the H200: a quarter of the tracker's time beside the captions).
    scenescribe never reads those times, so during its own predict calls (one at a time, under
    the predict lock) the timer reads the clock alone."""
    from ultralytics.utils import ops

    profile = getattr(ops, "Profile", None)
    timer = getattr(profile, "time", None)
    if profile is None or timer is None:
        yield
        return
    profile.time = lambda self: time.perf_counter()
    try:
        yield
    finally:
        profile.time = timer


def _library_version() -> str:
    try:
        return version("ultralytics")
    except PackageNotFoundError:
        return "unknown"


class YoloTracker(ObjectTracker):
    """Ultralytics YOLO (detection weights in ``.pt`` form) with ByteTrack, per scene."""

    def cache_key(self) -> dict[str, Any]:
        return {**super().cache_key(), "library": f"ultralytics {_library_version()}"}

    _batch = 0  # 0: by device; set to override (tests, benchmarks)
    _predict_lock = threading.Lock()  # ultralytics' predictor keeps per-call state on the model
    # Videos side by side: model calls take turns under the lock, while each video's decoding
    # and tracking (its own ByteTrack per scene) overlap the other's calls. On the H200 the
    # tracker's videos ran one after another beside the caption stage, each call waiting on
    # the shared GPU (benchmarks/NOTES.md).
    concurrent_videos = True

    @property
    def batch_size(self) -> int:
        """Frames per model call. Measured on CPU (Big Buck Bunny 30 s at 2 fps, one torch
        thread): 9.6 CPU-s at batch 1, 6.6 at 4, 6.4 at 8. On a GPU a batch of 64 640x384 frames
        is a few ms of yolov8n; per-call overhead (Python, NMS launch) dominates below that."""
        return (self._batch or env_count("SCENESCRIBE_YOLO_BATCH")
                or (64 if self.device.startswith("cuda") else 8))

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch = max(0, int(value))

    # No transformers build and no process-wide state in the load (the checked unpickling has its
    # own lock; the weights are made fp32 explicitly): the whole load overlaps the others'.
    side_by_side = True
    lazy_imports = False  # ultralytics imports no transformers: no wait for Whisper's imports

    def _imports(self) -> None:
        """ultralytics (configured offline) first, with no lock (``lazy_imports``). Without it,
        ``_load`` names the missing package."""
        if importlib.util.find_spec("ultralytics") is None:
            return
        import_ultralytics()
        import_names(("ultralytics:YOLO", "ultralytics.nn.tasks", "ultralytics.trackers",
                      "scenescribe.objects.yolo_weights"))

    def _load(self) -> Any:
        # ByteTrack imports lap; without it ultralytics would try to pip-install it at run time.
        if importlib.util.find_spec("lap") is None:
            raise BackendUnavailableError(self.name, "lap", self.entry.extra)
        weights = self._weights_file()
        import_ultralytics()
        from ultralytics import YOLO

        from scenescribe.objects.yolo_weights import checked_loading

        # A .pt file is a pickle: it is unpickled with weights_only=True, never in full.
        with checked_loading(weights):
            try:
                return YOLO(str(weights), task="detect")
            except Exception as exc:  # torch and ultralytics raise many types for a bad file
                raise ModelNotFoundError(f"{self.name}: cannot load {weights}: {exc}") from exc

    def facts(self) -> dict[str, Any]:
        from scenescribe.objects.yolo_weights import pin_facts

        return {**super().facts(), **pin_facts(self.entry, self._weights_file)}

    def _weights_file(self) -> Path:
        from scenescribe.objects.yolo_weights import weights_file

        return weights_file(self.entry, Path(self.weights()))

    def track_scenes(self, video: VideoInfo, scenes: Sequence[Scene],
                     progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """Track ``scenes`` with a decode pass of their own (``track_frames`` shares one)."""
        if not video.has_video:
            yield from self.track_frames(video, scenes, iter(()), progress)
            return
        self.load()
        picks = ReadAhead(decode_pass(video.path, self.frame_requests(video, scenes)),
                          PREFETCH_BATCHES * self.batch_size, name="objects-decode")
        try:
            yield from self.track_frames(video, scenes, picks, progress)
        finally:
            picks.close()

    def frame_requests(self, video: VideoInfo, scenes: Sequence[Scene]) -> list[FrameRequest]:
        """The frames ``track_frames`` needs from a pass: the midpoints of scenes that might hold
        no sampled frame (request 0, first so a scene's midpoint arrives before it closes), and
        the first frame at or after every ``1 / sample_fps`` tick over the scenes (request 1)."""
        fps = self.options.sample_fps
        step = 1.0 / (video.fps or 25.0)
        ticks: set[int] = set()
        mids = []
        for scene in scenes:
            # From the tick at or before the start: its frame may be the scene's first one.
            ticks.update(range(int(scene.start * fps + 1e-6), math.ceil(scene.end * fps - 1e-6)))
            if scene.duration < 1.0 / fps + 2 * step:
                mids.append(_mid(scene))
        size = self._short_side(video)
        return [FrameRequest(tuple(mids), SHOWN, short_side=size),
                FrameRequest(tuple(k / fps for k in sorted(ticks)), TICK, short_side=size)]

    def track_frames(self, video: VideoInfo, scenes: Sequence[Scene], picks: Iterator[Pick],
                     progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """Track ``scenes`` on the picks of a pass over ``frame_requests(video, scenes)``.

        Yields ``(scene index, summaries)`` in time order; the model must be loaded.
        """
        task = progress.task("objects", total=len(scenes))
        try:
            if not video.has_video:  # audio-only input: nothing to see
                for scene in scenes:
                    yield scene.index, []
                    task.advance()
                return
            for index, summaries in self._track_video(video, sorted(scenes, key=_start), picks):
                yield index, summaries
                task.advance()
        finally:
            task.close()

    def _track_video(self, video: VideoInfo, scenes: list[Scene],
                     picks: Iterator[Pick]) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """Detect in batches across scenes, then track frame by frame within each scene."""
        if not scenes:
            return
        tracker: Any = None
        objects = SceneObjects(self.names)
        for pos, frame, result in self._detected(self._scene_frames(video, scenes, picks)):
            if tracker is None:  # a scene's first frame: fresh tracks, ids from 1
                tracker, objects = self.new_tracker(), SceneObjects(self.names)
            if frame is None:  # the scene ends
                yield scenes[pos].index, objects.summaries()
                tracker = None
            else:
                objects.add(self.track_frame(tracker, result, frame.time))

    def _scene_frames(self, video: VideoInfo, scenes: list[Scene], picks: Iterator[Pick]
                      ) -> Iterator[tuple[int, DecodedFrame | None]]:
        """``(scene position, frame)`` for each frame to track, then ``(position, None)`` when
        the scene closes (the first frame past it arrived). A scene that got no sampled frame is
        looked at once, at its midpoint."""
        size = self._short_side(video)
        mids: dict[float, DecodedFrame] = {}
        seen = 0
        pos = 0

        def close(at: int) -> Iterator[tuple[int, DecodedFrame | None]]:
            if seen == 0 or at != pos:
                yield at, self._midpoint(video, scenes[at], size, mids)
            yield at, None

        for pick in picks:
            if pick.request == 0:
                mids[pick.time] = pick.frame
                continue
            frame = pick.frame
            while pos < len(scenes) and frame.time >= scenes[pos].end:
                yield from close(pos)
                pos, seen = pos + 1, 0
            if pos == len(scenes):
                break  # past the last wanted scene: stop decoding
            if frame.time >= scenes[pos].start:  # frames between wanted scenes are skipped
                seen += 1
                yield pos, frame
        for at in range(pos, len(scenes)):  # scenes reaching past the last decoded frame
            yield from close(at)

    def _midpoint(self, video: VideoInfo, scene: Scene, short_side: int | None,
                  mids: dict[float, DecodedFrame]) -> DecodedFrame:
        mid = _mid(scene)
        frame = mids.pop(mid, None)
        if frame is None:  # not foreseen by ``frame_requests`` (variable frame rate): seek
            log.debug("scene %d: no sampled frame; seeking to %.3f s", scene.index, mid)
            frame = frames_at(video.path, [mid], short_side=short_side)[mid]
        return frame

    def _detected(self, items: Iterator[tuple[int, DecodedFrame | None]]
                  ) -> Iterator[tuple[int, DecodedFrame | None, Any]]:
        """``items`` with each frame's detections: one model call per ``batch_size`` frames,
        whichever scenes they belong to (detection is per frame; only tracking is per scene)."""
        batch = self.batch_size
        held: list[tuple[int, DecodedFrame | None]] = []
        frames: list[DecodedFrame] = []

        def flush() -> Iterator[tuple[int, DecodedFrame | None, Any]]:
            results = iter(self.detect([f.image for f in frames]) if frames else [])
            for pos, frame in held:
                yield pos, frame, None if frame is None else next(results)
            held.clear()
            frames.clear()

        for pos, frame in items:
            held.append((pos, frame))
            if frame is not None:
                frames.append(frame)
                if len(frames) >= batch:
                    yield from flush()
        yield from flush()

    def _short_side(self, video: VideoInfo) -> int | None:
        """Decode so the long side is ``imgsz``: YOLO letterboxes to that anyway, and FFmpeg's
        scaler shrinking early saves the RGB conversion and memory of full-size frames."""
        if not video.width or not video.height:
            return None
        long_side, short_side = max(video.width, video.height), min(video.width, video.height)
        return max(2, round(self.options.imgsz * short_side / long_side))

    def detect(self, images: list[np.ndarray]) -> list[Any]:
        """Untracked detections (ultralytics ``Results``) of RGB frames, in one model call.

        Ultralytics letterboxes each frame as it would one at a time (same shapes: the same
        minimal padding), stacks them and runs the model once."""
        # ultralytics' select_device sets torch's thread count for training: put back what the
        # thread had, read under the lock (outside it, a second tracker's call could see the
        # count another call's predict had just lowered, and "restore" that).
        with (self._predict_lock, launching(), torch_threads_kept(),
              timing_without_syncs()):
            results = self.model.predict(
                [np.ascontiguousarray(im[..., ::-1]) for im in images],  # ultralytics: BGR
                conf=self.options.confidence, imgsz=self.options.imgsz, device=self.device,
                half=self.device.startswith("cuda"), verbose=False)
        return list(results)

    def new_tracker(self) -> Any:
        """A fresh tracker from the ``tracker`` option's yaml (ids restart from 1)."""
        from ultralytics.trackers.track import TRACKER_MAP
        from ultralytics.utils import YAML, IterableSimpleNamespace
        from ultralytics.utils.checks import check_yaml

        name = self.options.tracker
        settings = self.__dict__.get("_tracker_yaml")
        if settings is None:  # read once: a fresh tracker starts every scene
            settings = self.__dict__["_tracker_yaml"] = YAML.load(check_yaml(
                name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"))
        cfg = IterableSimpleNamespace(**settings)
        cfg.device = self.device
        kind = TRACKER_MAP.get(cfg.tracker_type)
        if kind is None or hasattr(kind, "setup_predictor") or getattr(cfg, "with_reid", False):
            # Those read the predictor's features: they cannot follow batched detection.
            raise ConfigError(f"{self.name}: tracker {cfg.tracker_type!r} is not supported; "
                              "use bytetrack or botsort without ReID")
        return kind(args=cfg)

    def track_frame(self, tracker: Any, result: Any, time: float) -> Detections:
        """Feed one frame's detections to ``tracker``; the boxes it reports, as ultralytics'
        own ``track`` reports them (``on_predict_postprocess_end``)."""
        import torch

        tracks = tracker.update(result.boxes.cpu().numpy(), result.orig_img)
        if len(tracks) == 0:
            if any(not t.is_activated for t in tracker.tracked_stracks):
                return Detections.empty(time)  # new tracks are hidden until confirmed
            return Detections.from_ultralytics(result, time)
        tracked = result[tracks[:, -1].astype(int)]
        tracked.update(boxes=torch.as_tensor(tracks[:, :-1], device=result.boxes.data.device))
        return Detections.from_ultralytics(tracked, time)

    @property
    def names(self) -> dict[int, str]:
        return dict(self.model.names)


def _start(scene: Scene) -> float:
    return scene.start


def _mid(scene: Scene) -> float:
    return scene.start + scene.duration / 2
