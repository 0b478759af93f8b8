"""Media made at test time: tiny clips written with PyAV, no shared files needed."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def make_clip(path: Path, seconds: int = 4, fps: int = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """A silent clip whose colour changes every second (a cut per second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(seconds * fps):
            shade = (i // fps) * 60 % 256
            image = np.full((size[1], size[0], 3), shade, dtype=np.uint8)
            image[..., i // fps % 3] = 255 - shade
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def head(source: Path, target: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``source``, its packets copied (short clips keep tests quick);
    the container follows ``target``'s suffix."""
    with av.open(str(source)) as given, av.open(str(target), "w") as cut:
        streams = {s.index: cut.add_stream_from_template(s) for s in given.streams
                   if s.type in ("video", "audio")}
        for packet in given.demux(*[s for s in given.streams if s.index in streams]):
            if packet.dts is None or (packet.pts is not None
                                      and packet.pts * packet.time_base >= seconds):
                continue
            packet.stream = streams[packet.stream.index]
            cut.mux(packet)
    return target
