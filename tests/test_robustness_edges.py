"""Robustness at the program's edges (issue 11: items 4, 6, 7, 8, 11), each on inputs made here.

Hostile-but-fair inputs a user can produce: file names holding Rich markup, config files with
wrong types, captions holding subtitle syntax, hand-edited records, crafted weights, secrets in
URLs. Each test failed before its fix.
"""

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


# --- 4: Rich markup in paths and messages ------------------------------------------------------

def test_markup_in_a_file_name_does_not_crash_the_summary(tmp_path: Path) -> None:
    # A "/" cannot be in a file name: the path's folder "a[" and its file "red]b[bold].mp4".
    (tmp_path / "a[").mkdir()
    video = make_video(tmp_path / "a[/red]b[bold].mp4")
    code, stdout, stderr = invoke("run", str(video), "--out", str(tmp_path / "out"),
                                  "--stages", "none")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "a[/red]b[bold].mp4" in stdout.replace("\n", "")  # literal, not parsed as markup


def test_bracketed_text_survives_in_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[shots]\nno_such_key = 1\n")
    _, _, stderr = invoke("run", str(tmp_path / "x.mp4"), "--config", str(config))
    assert "[shots]" in stderr and "no_such_key" in stderr
