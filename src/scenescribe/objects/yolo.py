"""YOLO detection with ByteTrack tracking through ultralytics, summarised per scene.

Frames sampled at ``sample_fps`` (the first frame at or after each tick) are batched within a
scene and tracked; the tracker restarts at every scene boundary so track ids and counts are per
scene. A scene that no sampled frame falls in (shorter than ``1 / sample_fps``) is sampled once
at its midpoint. ``frame_requests`` says which frames that takes, so one decode pass can serve
the tracker and the scene frames together (``sampling.sample_and_track``); ``track_scenes``
runs a pass of its own on a background thread, so decoding overlaps inference.

Ultralytics is kept off the network: weights are an explicit local path, its settings file lives
in scenescribe's cache (``YOLO_CONFIG_DIR``), ``YOLO_OFFLINE`` stops its DNS probe and telemetry,
``YOLO_AUTOINSTALL`` stops it pip-installing ``lap``, and analytics sync is switched off.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from scenescribe.backend import import_names
from scenescribe.errors import BackendUnavailableError, ModelNotFoundError, ScenescribeError
from scenescribe.media import SHOWN, TICK, DecodedFrame, FrameRequest, Pick, decode_pass, frames_at
from scenescribe.objects.base import ObjectTracker
from scenescribe.objects.detections import Detections
from scenescribe.objects.summary import SceneObjects
from scenescribe.progress import Progress
from scenescribe.records import ObjectSummary, Scene, VideoInfo
from scenescribe.release_assets import file_sha256

log = logging.getLogger("scenescribe.objects")

PREFETCH_FRAMES = 16  # decoded frames buffered ahead of the model: a few batches, a few MB


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


def _library_version() -> str:
    try:
        return version("ultralytics")
    except PackageNotFoundError:
        return "unknown"


class YoloTracker(ObjectTracker):
    """Ultralytics YOLO (detection weights in ``.pt`` form) with ByteTrack, per scene."""

    def cache_key(self) -> dict[str, Any]:
        return {**super().cache_key(), "library": f"ultralytics {_library_version()}"}

    @property
    def batch_size(self) -> int:
        # Measured on CPU (Big Buck Bunny 30 s at 2 fps, one torch thread): 9.6 CPU-s at batch
        # 1, 6.6 at 4, 6.4 at 8. The GPU size is a guess, unmeasured: big enough to fill it.
        return 32 if self.device.startswith("cuda") else 4

    def _imports(self) -> None:
        """ultralytics (configured offline) first, under the load lock. Without it, ``_load``
        names the missing package."""
        if importlib.util.find_spec("ultralytics") is None:
            return
        import_ultralytics()
        import_names(("ultralytics:YOLO", "ultralytics.nn.tasks", "ultralytics.trackers",
                      "scenescribe.objects.yolo_weights"))

    def _load(self) -> Any:
        # ByteTrack imports lap; without it ultralytics would try to pip-install it at run time.
        if importlib.util.find_spec("lap") is None:
            raise BackendUnavailableError(self.name, "lap", self.entry.extra)
        weights = self._weights_file(Path(self.weights()))
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
        """Adds the weights file's digest beside the pinned one: a local copy may differ."""
        facts = super().facts()
        if self.entry.sha256:
            facts["sha256"] = self.entry.sha256
            try:
                digest = file_sha256(self._weights_file(Path(self.weights())))
            except (OSError, ScenescribeError):
                return facts  # facts never fail a run; the load reports a missing file
            facts["weights_sha256"] = digest
            facts["weights_match_pin"] = digest == self.entry.sha256
        return facts

    def _weights_file(self, path: Path) -> Path:
        """The ``.pt`` file itself, or the one inside a folder (a hub snapshot)."""
        if path.is_file():
            return path
        named = path / f"{self.entry.name}.pt"
        found = [named] if named.is_file() else sorted(path.glob("*.pt"))
        if len(found) != 1:
            raise ModelNotFoundError(f"{self.name}: expected {named.name} in {path}, found "
                                     f"{[p.name for p in found] or 'no .pt file'}")
        return found[0]

    def track_scenes(self, video: VideoInfo, scenes: Sequence[Scene],
                     progress: Progress) -> Iterator[tuple[int, list[ObjectSummary]]]:
        """Track ``scenes`` with a decode pass of their own (``track_frames`` shares one)."""
        if not video.has_video:
            yield from self.track_frames(video, scenes, iter(()), progress)
            return
        self.load()
        picks = _prefetch(decode_pass(video.path, self.frame_requests(video, scenes)),
                          PREFETCH_FRAMES)
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
        """Walk sampled frames once, closing each scene when the first frame past it arrives."""
        if not scenes:
            return
        size = self._short_side(video)
        mids: dict[float, DecodedFrame] = {}
        run = _SceneRun(self, scenes[0])
        pos = 0
        for pick in picks:
            if pick.request == 0:
                mids[pick.time] = pick.frame
                continue
            frame = pick.frame
            while pos < len(scenes) and frame.time >= scenes[pos].end:
                yield scenes[pos].index, run.close(video, size, mids)
                pos += 1
                if pos < len(scenes):
                    run = _SceneRun(self, scenes[pos])
            if pos == len(scenes):
                break  # past the last wanted scene: stop decoding
            if frame.time >= scenes[pos].start:  # frames between wanted scenes are skipped
                run.add(frame)
        for scene in scenes[pos:]:  # scenes reaching past the last decoded frame
            if scene is not run.scene:
                run = _SceneRun(self, scene)
            yield scene.index, run.close(video, size, mids)

    def _short_side(self, video: VideoInfo) -> int | None:
        """Decode so the long side is ``imgsz``: YOLO letterboxes to that anyway, and FFmpeg's
        scaler shrinking early saves the RGB conversion and memory of full-size frames."""
        if not video.width or not video.height:
            return None
        long_side, short_side = max(video.width, video.height), min(video.width, video.height)
        return max(2, round(self.options.imgsz * short_side / long_side))

    def detect_track(self, images: list[np.ndarray], times: list[float]) -> list[Detections]:
        """Track a batch of RGB frames of one scene, in order, continuing the current tracks."""
        import torch

        threads = torch.get_num_threads()
        tracker = self.options.tracker
        results = self.model.track(
            [np.ascontiguousarray(im[..., ::-1]) for im in images],  # ultralytics wants BGR
            persist=True, tracker=tracker if tracker.endswith(".yaml") else f"{tracker}.yaml",
            conf=self.options.confidence, imgsz=self.options.imgsz, device=self.device,
            half=self.device.startswith("cuda"), verbose=False)
        if torch.get_num_threads() != threads:
            # ultralytics' select_device sets torch's process-wide thread count for training;
            # put back what the process had so later stages are not slowed.
            torch.set_num_threads(threads)
        return [Detections.from_ultralytics(r, t) for r, t in zip(results, times, strict=True)]

    def reset_tracks(self) -> None:
        """Forget every track: ids restart from 1 and no track carries into the next scene."""
        predictor = getattr(self.model, "predictor", None)
        for tracker in getattr(predictor, "trackers", None) or ():
            tracker.reset()

    @property
    def names(self) -> dict[int, str]:
        return dict(self.model.names)


class _SceneRun:
    """One scene in progress: its pending batch of frames and its running summary."""

    def __init__(self, backend: YoloTracker, scene: Scene) -> None:
        self.backend = backend
        self.scene = scene
        self.objects = SceneObjects(backend.names)
        self.pending: list[DecodedFrame] = []
        backend.reset_tracks()

    def add(self, frame: DecodedFrame) -> None:
        self.pending.append(frame)
        if len(self.pending) >= self.backend.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        detections = self.backend.detect_track([f.image for f in self.pending],
                                               [f.time for f in self.pending])
        for d in detections:
            self.objects.add(d)
        self.pending = []

    def close(self, video: VideoInfo, short_side: int | None,
              mids: dict[float, DecodedFrame]) -> list[ObjectSummary]:
        """Finish the scene; one that got no sampled frame is looked at once, at its midpoint."""
        self.flush()
        if self.objects.frames == 0:
            mid = _mid(self.scene)
            frame = mids.pop(mid, None)
            if frame is None:  # not foreseen by ``frame_requests`` (variable frame rate): seek
                log.debug("scene %d: no sampled frame; seeking to %.3f s", self.scene.index, mid)
                frame = frames_at(video.path, [mid], short_side=short_side)[mid]
            self.pending.append(frame)
            self.flush()
        return self.objects.summaries()


def _start(scene: Scene) -> float:
    return scene.start


def _mid(scene: Scene) -> float:
    return scene.start + scene.duration / 2


class _Prefetch(Iterator[Any]):
    """Pull from an iterator on a daemon thread, ``depth`` items ahead; ``close`` stops it."""

    _DONE = object()

    def __init__(self, source: Iterator[Any], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._fill, name="objects-decode", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    break
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()  # release the container on this thread, where the generator runs

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is self._DONE:
            self._queue.put(item)  # stay exhausted on later calls
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _prefetch(source: Iterator[Any], depth: int) -> _Prefetch:
    return _Prefetch(source, depth)
