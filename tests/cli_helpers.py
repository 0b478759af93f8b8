"""Helpers for the CLI robustness tests: invoke the CLI in-process, make a tiny clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from scenescribe.cli import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def make_video(path: Path, seconds: float = 2.0, fps: int = 10) -> Path:
    """A small silent H.264 clip with one hard cut in the middle."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        total = int(seconds * fps)
        for i in range(total):
            value = 30 if i < total // 2 else 220
            image = np.full((48, 64, 3), value, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


