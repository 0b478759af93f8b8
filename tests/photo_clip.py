"""A clip made at test time from the real photos in the ultralytics wheel, and a loaded YOLOv8n
tracker, for the object tests (``test_objects*.py``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from conftest import MODELS
from scenescribe import registry
from scenescribe.media import probe
from scenescribe.options import ObjectOptions
from scenescribe.records import VideoInfo

FPS = 10
SIZE = (640, 480)


def _asset(name: str) -> Image.Image:
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.origin is not None
    return Image.open(Path(spec.origin).parent / "assets" / name).convert("RGB")


def _panned(photo: Image.Image, frames: int) -> Iterator[np.ndarray]:
    """The photo fitted into the canvas, sliding 2-3 px a frame so tracks have motion."""
    w, h = SIZE
    scale = min((w - 90) / photo.width, (h - 90) / photo.height)
    small = photo.resize((round(photo.width * scale), round(photo.height * scale)))
    for i in range(frames):
        canvas = Image.new("RGB", SIZE, (114, 114, 114))
        canvas.paste(small, (15 + 3 * i if small.width < w - 90 else 45, 10 + 2 * i))
        yield np.asarray(canvas)


def _encode(path: Path, images: Iterator[np.ndarray]) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for image in images:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def make_photo_clip(folder: Path) -> VideoInfo:
    """3 s of bus.jpg (a bus, four people) then 3 s of zidane.jpg (two people), 10 fps."""
    frames = [*_panned(_asset("bus.jpg"), 3 * FPS), *_panned(_asset("zidane.jpg"), 3 * FPS)]
    return probe(_encode(folder / "photos.mp4", iter(frames)))


def loaded_tracker() -> object:
    """YOLOv8n with ByteTrack on the CPU, loaded."""
    backend = registry.create("yolov8n", "objects", options=ObjectOptions(), device="cpu",
                              model_dir=MODELS)
    backend.load()
    return backend
