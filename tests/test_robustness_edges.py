"""Robustness at the program's edges (issue 11: items 4 and 6), each on inputs made here.

Hostile-but-fair inputs a user can produce: file names holding Rich markup, config files with
wrong types or bytes. Each test failed before its fix. Items 7-8 are in
``test_robustness_exports.py``, item 11 in ``test_robustness_security.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import invoke, make_video

# --- 4: Rich markup in paths and messages ------------------------------------------------------

def test_markup_in_a_file_name_does_not_crash_the_summary(tmp_path: Path) -> None:
    # A "/" cannot be in a file name: the path's folder "a[" and its file "red]b[bold].mp4".
    (tmp_path / "a[").mkdir()
    video = make_video(tmp_path / "a[/red]b[bold]:thumbs_up:.mp4")
    code, stdout, stderr = invoke("run", str(video), "--out", str(tmp_path / "out"),
                                  "--stages", "none")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "a[/red]b[bold]:thumbs_up:.mp4" in stdout.replace("\n", "")  # literal: no markup, emoji


def test_bench_names_a_missing_input_and_fails(tmp_path: Path) -> None:
    good = make_video(tmp_path / "good.mp4")
    missing = tmp_path / "gone[red].mp4"
    code, _, stderr = invoke("bench", str(good), str(missing), "--out", str(tmp_path / "out"),
                             "--stages", "none", "--no-job-captions", "--mode", "scenescribe")
    assert code == 1
    assert "Traceback" not in stderr
    lines = stderr.replace("\n", " ")
    assert f"failed: {missing}: No such file" in lines
    assert "1 of 2 input(s) failed" in lines


def test_progress_descriptions_are_literal() -> None:
    import io

    from rich.console import Console

    from scenescribe.cli_progress import RichProgress

    console = Console(file=io.StringIO(), width=200, emoji=False)
    progress = RichProgress(console)
    progress.task("captions [llava] a[/red]b :thumbs_up: [bold]x", total=3)
    console.print(progress._bars.get_renderable())  # what the live display draws
    assert "captions [llava] a[/red]b :thumbs_up: [bold]x" in console.file.getvalue()


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
    (["--model-dir", "/no/such/models"], "model_dir (--model-dir)"),
]

CONFIG_CASES = [
    ("[objects]\nconfidence = 5\n", "objects.confidence"),
    ('[objects]\ntracker = "deepsort"\n', "objects.tracker"),
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
    ('[speech]\napi_base = "ftp://me:hunter2@host/v1"\n', "'ftp://***@host/v1'"),
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


@pytest.mark.parametrize("command", ["run", "bench"])
def test_a_missing_vlm_weights_path_stops_before_any_work(command: str, tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    code, _, stderr = invoke(command, str(video), "--out", str(out), "--stages", "none",
                             "--vlm", "smolvlm2=/no/such/weights")
    assert code == 1, stderr  # as every other --vlm error (an unknown name, a bad form)
    assert stderr.strip() == "error: --vlm smolvlm2=/no/such/weights: no such file or folder"
    assert not out.exists()


@pytest.mark.parametrize(("text", "option"), CONFIG_CASES)
def test_bad_config_values_stop_before_any_work(text: str, option: str, tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    config = tmp_path / "c.toml"
    config.write_text(text)
    out = tmp_path / "out"
    code, _, stderr = invoke("run", str(video), "--out", str(out), "--config", str(config))
    assert_usage_error(code, stderr, str(config), option)
    assert "hunter2" not in stderr
    assert not out.exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--max-scenes", "-1"], "--max-scenes: expected an integer >= 0"),
    (["--mode", "fast"], "--mode: expected"),
    (["--batch-size", "-1"], "captions.batch_size"),
    (["--device", "tpu"], "device (--device)"),
])
def test_bad_bench_values_stop_before_any_work(args: list[str], needle: str,
                                               tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    out = tmp_path / "bench"
    code, _, stderr = invoke("bench", str(video), "--out", str(out), "--stages", "none", *args)
    assert_usage_error(code, stderr, needle)
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


# --- bench --config: the CLI's defaults no longer override the config ---------------------------

def test_bench_config_values_are_kept_unless_given(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import scenescribe.bench

    seen = []

    def capture(videos: object, out: object, options: object, bench_options: object,
                progress: object = None) -> dict:
        seen.append((options, bench_options))  # what bench would run with; nothing is timed
        return {"failed_inputs": [], "rows": [], "summary": []}

    monkeypatch.setattr(scenescribe.bench, "bench", capture)
    monkeypatch.setattr("scenescribe.bench_report.to_markdown", lambda report: "")
    config = tmp_path / "c.toml"
    config.write_text('[captions]\nmodels = ["smolvlm"]\nmax_new_tokens = 7\nbatch_size = 3\n')
    video = make_video(tmp_path / "clip.mp4")
    args = ["bench", str(video), "--out", str(tmp_path / "b"), "--config", str(config)]
    assert invoke(*args)[0] == 0
    assert invoke(*args, "--max-new-tokens", "9", "--vlm", "phi3v", "--random-weights")[0] == 0
    (kept, kept_bench), (given, given_bench) = seen
    assert (kept.captions.models, kept.captions.max_new_tokens, kept.captions.batch_size,
            kept_bench.models) == (("smolvlm",), 7, 3, ("smolvlm",))
    assert (given.captions.models, given.captions.max_new_tokens, given.captions.min_new_tokens,
            given.captions.batch_size, given_bench.models) == (("phi3v",), 9, 9, 3, ("phi3v",))
