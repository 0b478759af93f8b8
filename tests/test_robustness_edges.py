"""Robustness at the program's edges (issue 11: items 4, 6, 7, 8, 11), each on inputs made here.

Hostile-but-fair inputs a user can produce: file names holding Rich markup, config files with
wrong types, captions holding subtitle syntax, hand-edited records, crafted weights, secrets in
URLs. Each test failed before its fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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


# --- 6: every option validated before any work --------------------------------------------------

CLI_CASES = [
    (["--max-scene-len", "1e-9"], "shots.max_scene_len (--max-scene-len)"),
    (["--max-scene-len", "inf"], "shots.max_scene_len"),
    (["--min-scene-len", "nan"], "shots.min_scene_len (--min-scene-len)"),
    (["--frame-size", "-1"], "frames.short_side (--frame-size)"),
    (["--device", "gpu"], "device (--device)"),
    (["--device", "cuda:99"], "device (--device)"),
    (["--batch-size", "-3"], "captions.batch_size (--batch-size)"),
    (["--object-fps", "0"], "objects.sample_fps (--object-fps)"),
    (["--max-new-tokens", "0"], "captions.max_new_tokens (--max-new-tokens)"),
    (["--dtype", "float8"], "captions.dtype (--dtype)"),
    (["--stages", "speech,ocr"], "stages (--stages)"),
]

CONFIG_CASES = [
    ("[objects]\nconfidence = 5\n", "objects.confidence"),
    ('[shots]\nmin_scene_len = "abc"\n', "shots.min_scene_len"),
    ("[shots]\nmax_scene_len = inf\n", "shots.max_scene_len"),
    ("[shots]\nmax_scene_len = nan\n", "shots.max_scene_len"),
    ("[sounds]\ntop_k = 0\n", "sounds.top_k"),
    ("[speech]\napi_concurrency = -2\n", "speech.api_concurrency"),
    ("[speech]\nvad = 1\n", "speech.vad"),
    ("[frames]\npositions = [0.5, 1.5]\n", "frames.positions"),
    ('stages = "speech"\n', "stages"),
    ("shots = 3\n", "[shots] must be a table"),
    ("[shots]\nno_such_key = 1\n", "unknown option(s) no_such_key"),
]


def assert_usage_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(("args", "option"), CLI_CASES)
def test_bad_cli_values_stop_before_any_work(args: list[str], option: str, tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    code, _, stderr = invoke("run", str(video), "--out", str(out), "--stages", "none", *args)
    assert_usage_error(code, stderr, option, "expected", "found")
    assert not out.exists(), "nothing may be written before the options are valid"


@pytest.mark.parametrize(("text", "option"), CONFIG_CASES)
def test_bad_config_values_stop_before_any_work(text: str, option: str, tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    config = tmp_path / "c.toml"
    config.write_text(text)
    out = tmp_path / "out"
    code, _, stderr = invoke("run", str(video), "--out", str(out), "--config", str(config))
    assert_usage_error(code, stderr, str(config), option)
    assert not out.exists()


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_bytes(b'[captions]\nprompt = "caf\xe9"\n')
    code, _, stderr = invoke("run", str(tmp_path / "x.mp4"), "--config", str(config))
    assert_usage_error(code, stderr, str(config), "not UTF-8", "0xe9")


def test_out_that_is_a_file_or_inside_one(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    a_file = tmp_path / "taken"
    a_file.write_text("the user's file")
    for out in (a_file, a_file / "sub"):
        code, _, stderr = invoke("run", str(video), "--out", str(out), "--stages", "none")
        assert_usage_error(code, stderr, f"--out {out}", "expected a folder", "found a file")
    assert a_file.read_text() == "the user's file"


def test_out_that_cannot_be_written(tmp_path: Path) -> None:
    import os

    video = make_video(tmp_path / "clip.mp4")
    outs = []
    if Path("/proc/self").is_dir():
        outs.append(Path("/proc/scenescribe-out"))  # not writable, even for root
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() != 0:  # root writes through permission bits
        outs.append(locked / "out")
    if not outs:
        pytest.skip("no read-only location on this system")
    for out in outs:
        code, _, stderr = invoke("run", str(video), "--out", str(out), "--stages", "none")
        assert_usage_error(code, stderr, f"--out {out}", "expected a writable folder")


def test_python_api_rejects_the_same_values(tmp_path: Path) -> None:
    import scenescribe
    from scenescribe.errors import OptionError
    from scenescribe.options import ObjectOptions, RunOptions, ShotOptions

    with pytest.raises(OptionError, match=r"shots.max_scene_len .*found 1e-09"):
        ShotOptions(max_scene_len=1e-9)
    with pytest.raises(OptionError, match="objects.confidence"):
        RunOptions(objects=ObjectOptions(confidence=5))
    with pytest.raises(OptionError, match="device"):
        RunOptions(device="gpu")
    # A value forced past the constructor is still refused by run(), before anything is written.
    options = RunOptions(stages=())
    object.__setattr__(options.shots, "max_scene_len", float("nan"))
    video = make_video(tmp_path / "clip.mp4")
    with pytest.raises(OptionError, match="shots.max_scene_len"):
        scenescribe.run(video, tmp_path / "out", options)
    assert not (tmp_path / "out").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OptionError, match="expected a folder"):
        scenescribe.run(video, a_file, RunOptions(stages=()))
    assert ShotOptions(max_scene_len=0).max_scene_len == 0  # 0 still means "never split"
    assert RunOptions(stages=["speech"]).stages == ("speech",)  # a list is taken as a tuple
