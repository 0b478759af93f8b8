"""YOLO detection with ByteTrack tracking through ultralytics, summarised per scene.

``detect_frames``: frames sampled at ``sample_fps`` (the first frame at or after each tick),
decoded on a background thread, are detected in batches of ``batch_size`` frames per model call
(``yolo_batch``: padding, model and suppression batched on the model's device, predict's boxes);
it needs no scenes, so the ``detections`` stage runs it over the whole video, keyed on the
probe alone. ``track_detected`` then feeds each scene's stored boxes to a fresh ByteTrack, one
frame at a time, in order, so the records are those of a frame-by-frame run and track ids and
counts are per scene. A scene that no sampled frame falls in (shorter than ``1 / sample_fps``)
is looked at once, at its midpoint.

Ultralytics is kept off the network: weights are an explicit local path, its settings file lives
in scenescribe's cache (``YOLO_CONFIG_DIR``), ``YOLO_OFFLINE`` stops its DNS probe and telemetry,
``YOLO_AUTOINSTALL`` stops it pip-installing ``lap``, and analytics sync is switched off.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from scenescribe.backend import builds_held_off, import_names, torch_threads_kept
from scenescribe.errors import BackendUnavailableError, ConfigError, ModelNotFoundError
from scenescribe.gpu_share import launching
from scenescribe.knobs import env_count
from scenescribe.media import TICK, DecodedFrame, FrameRequest, decode_pass, frames_at
from scenescribe.media.readahead import ReadAhead
from scenescribe.media.spool import TickSpec
from scenescribe.objects.base import ObjectTracker
from scenescribe.objects.detected import FrameBoxes, VideoDetections, frames_by_scene
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
    _set_up: Any = None  # the predictor this tracker's own predict call set up (or reused)
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

    def tick_spec(self, video: VideoInfo) -> TickSpec | None:
        if not video.has_video:
            return None
        return TickSpec(self.sample_fps, self.ticks(video), self._short_side(video))

    def detect_frames(self, video: VideoInfo, ticks: Sequence[int], progress: Progress,
                      frames: Iterable[tuple[int, DecodedFrame]] | None = None
                      ) -> Iterator[FrameBoxes]:
        """One decode pass over ``ticks`` (or ``frames``, decoded before), read ahead on a
        thread while the model runs on batches of ``batch_size`` frames. With BoT-SORT's
        camera-motion compensation the warp from each frame to the next is measured here too,
        while the frames are at hand."""
        if not video.has_video or not ticks:
            return
        self.load()
        if frames is None:
            frames = self._decoded(video, ticks)
        picks = ReadAhead(iter(frames), PREFETCH_BATCHES * self.batch_size,
                          name="objects-decode")
        motion = self._motion()
        task = progress.task("detections", total=len(ticks))
        try:
            batch: list[tuple[int, DecodedFrame]] = []
            for pick in picks:
                batch.append(pick)
                if len(batch) >= self.batch_size:
                    yield from self._boxes(batch, motion)
                    task.advance(len(batch))
                    batch = []
            yield from self._boxes(batch, motion)
            task.advance(len(batch))
        finally:
            task.close()
            picks.close()

    def _decoded(self, video: VideoInfo, ticks: Sequence[int]) -> Iterator[tuple[int, DecodedFrame]]:
        """``(tick, frame)`` for ``ticks``, from one decode pass."""
        fps = self.sample_fps
        request = FrameRequest(tuple(k / fps for k in ticks), TICK,
                               short_side=self._short_side(video))
        for pick in decode_pass(video.path, [request]):
            yield round(pick.time * fps), pick.frame

    def _boxes(self, frames: list[tuple[int, DecodedFrame]], motion: Any) -> Iterator[FrameBoxes]:
        """Each ``(tick, frame)``'s boxes, from one model call."""
        if not frames:
            return
        found = self.detect([f.image for _, f in frames])
        for (tick, frame), boxes in zip(frames, found, strict=True):
            warp = None if motion is None else motion.apply(
                np.ascontiguousarray(frame.image[..., ::-1]), np.ascontiguousarray(boxes[:, :4]))
            yield FrameBoxes.create(tick, frame.time, boxes, frame.image.shape[:2], warp)

    def track_detected(self, video: VideoInfo, scenes: Sequence[Scene],
                       detected: VideoDetections,
                       progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """ByteTrack (or BoT-SORT) over each scene's stored boxes, a fresh tracker per scene."""
        task = progress.task("objects", total=len(scenes))
        try:
            ordered = sorted(scenes, key=_start)
            groups = (frames_by_scene(ordered, detected.frames) if video.has_video
                      else [[] for _ in ordered])
            mids = self._midpoints(video, [s for s, g in zip(ordered, groups, strict=True)
                                           if not g]) if video.has_video else {}
            names = detected.names or ({} if not mids else self.names)
            for scene, frames in zip(ordered, groups, strict=True):
                if not frames and scene.index in mids:
                    frames = [mids[scene.index]]
                tracker, objects = self.new_tracker(), SceneObjects(names)
                for frame in frames:
                    objects.add(self.track_frame(tracker, frame))
                yield scene.index, objects.summaries()
                task.advance()
        finally:
            task.close()

    def _midpoints(self, video: VideoInfo, scenes: list[Scene]) -> dict[int, FrameBoxes]:
        """The boxes at the midpoint of each scene no sampled frame fell in (shorter than a
        tick), from one pass over those times."""
        if not scenes:
            return {}
        self.load()
        shown = frames_at(video.path, [_mid(s) for s in scenes], short_side=self._short_side(video))
        frames = [(-1, shown[_mid(s)]) for s in scenes if _mid(s) in shown]
        found = {f.time: f for f in self._boxes(frames, None)}
        return {s.index: found[shown[_mid(s)].time] for s in scenes if _mid(s) in shown}

    def _short_side(self, video: VideoInfo) -> int | None:
        """Decode so the long side is ``imgsz``: YOLO letterboxes to that anyway, and FFmpeg's
        scaler shrinking early saves the RGB conversion and memory of full-size frames."""
        if not video.width or not video.height:
            return None
        long_side, short_side = max(video.width, video.height), min(video.width, video.height)
        return max(2, round(self.options.imgsz * short_side / long_side))

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Untracked detections of RGB frames, in one model call: per frame (N, 6) float32 rows
        (x1, y1, x2, y2 in the frame's pixels, confidence, class id), as ultralytics' ``predict``
        finds them.

        Same-shaped frames (the decoded ones) take ``yolo_batch``: letterbox, model and
        suppression batched on the model's device, one copy back. Anything it does not cover
        (mixed shapes, a frame needing a resize, the very first call, which sets ultralytics'
        predictor up) goes through ``predict``, as does every call with
        ``SCENESCRIBE_YOLO_PREDICT=1``; both give the same boxes. On the H200 a batch of 64
        640x360 frames took 18 ms instead of 150-200 (``benchmarks/bench_yolo_batch.py``); on a
        2-core CPU, batches of 8, 295 ms instead of 333 (the model is most of it there), so the
        CPU takes it too."""
        # ultralytics' select_device sets torch's thread count for training: put back what the
        # thread had, read under the lock (outside it, a second tracker's call could see the
        # count another call's predict had just lowered, and "restore" that). No build beside
        # the call: it would change the dtype of the tensors made without one.
        from scenescribe.objects.yolo_batch import detect_batch

        with self._predict_lock, builds_held_off(), launching(), torch_threads_kept():
            found, predictor = None, self.model.predictor
            if self._batched and predictor is not None and predictor is self._set_up:
                found = detect_batch(predictor, images, self.options.confidence,
                                     self.options.imgsz)
            if found is None:
                found = self._predicted(images)
        return found

    @property
    def _batched(self) -> bool:
        """Whether ``detect`` may take the batched path (``SCENESCRIBE_YOLO_PREDICT=1``: never)."""
        return not env_count("SCENESCRIBE_YOLO_PREDICT")

    def _predicted(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """``detect`` through ultralytics' ``predict`` (which also sets its predictor up for
        this tracker's device and precision: the batched path reuses that fused model)."""
        with timing_without_syncs():
            results = self.model.predict(
                [np.ascontiguousarray(im[..., ::-1]) for im in images],  # ultralytics: BGR
                conf=self.options.confidence, imgsz=self.options.imgsz, device=self.device,
                half=self.device.startswith("cuda"), verbose=False)
        self._set_up = self.model.predictor
        if not results:
            return []
        import torch

        data = torch.cat([r.boxes.data for r in results])  # one copy back, as the batched path
        return np.split(data.cpu().numpy(), np.cumsum([len(r.boxes) for r in results])[:-1])

    def _tracker_settings(self) -> dict[str, Any]:
        """The ``tracker`` option's yaml, read once (a fresh tracker starts every scene)."""
        settings = self.__dict__.get("_tracker_yaml")
        if settings is None:
            from ultralytics.utils import YAML
            from ultralytics.utils.checks import check_yaml

            name = self.options.tracker
            settings = self.__dict__["_tracker_yaml"] = YAML.load(check_yaml(
                name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"))
        return dict(settings)

    def new_tracker(self) -> Any:
        """A fresh tracker from the ``tracker`` option's yaml (ids restart from 1)."""
        from ultralytics.trackers.track import TRACKER_MAP
        from ultralytics.utils import IterableSimpleNamespace

        cfg = IterableSimpleNamespace(**self._tracker_settings())
        cfg.device = self.device
        kind = TRACKER_MAP.get(cfg.tracker_type)
        if kind is None or hasattr(kind, "setup_predictor") or getattr(cfg, "with_reid", False):
            # Those read the predictor's features: they cannot follow batched detection.
            raise ConfigError(f"{self.name}: tracker {cfg.tracker_type!r} is not supported; "
                              "use bytetrack or botsort without ReID")
        return kind(args=cfg)

    def _motion(self) -> Any:
        """BoT-SORT's camera-motion estimator (``GMC``) when the tracker uses one, else None.
        It runs over consecutive sampled frames during detection; each scene's tracker replays
        the warps (at a scene's first frame the tracker has no tracks for a warp to move, so a
        warp measured across the cut changes nothing, as a fresh estimator's would not)."""
        settings = self._tracker_settings()
        method = settings.get("gmc_method")
        if settings.get("tracker_type") != "botsort" or method in (None, "none"):
            return None
        from ultralytics.trackers.utils.gmc import GMC

        return GMC(method=method)

    def track_frame(self, tracker: Any, frame: FrameBoxes) -> Detections:
        """Feed one frame's stored boxes to ``tracker``; the boxes it reports, as ultralytics'
        own ``track`` reports them (``on_predict_postprocess_end``): the tracked ones, or while
        no track is confirmed yet, none if any is pending, else every box untracked."""
        from ultralytics.engine.results import Boxes

        boxes = Boxes(frame.boxes, frame.shape)
        image = None
        if frame.warp is not None and getattr(tracker, "gmc", None) is not None:
            tracker.gmc.apply = lambda *_: frame.warp  # the warp measured during detection
            image = _NO_IMAGE  # the tracker only applies a warp when it is given an image
        tracks = tracker.update(boxes, image)
        if len(tracks) == 0:
            if any(not t.is_activated for t in tracker.tracked_stracks):
                return Detections.empty(frame.time)
            return Detections.create(frame.boxes[:, :4], frame.boxes[:, 4], frame.boxes[:, 5],
                                     None, frame.time)
        # rows: x1, y1, x2, y2, track id, score, class, detection index
        return Detections.create(tracks[:, :4], tracks[:, 5], tracks[:, 6], tracks[:, 4],
                                 frame.time)

    @property
    def names(self) -> dict[int, str]:
        return dict(self.model.names)


_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)


def _start(scene: Scene) -> float:
    return scene.start


def _mid(scene: Scene) -> float:
    return scene.start + scene.duration / 2
