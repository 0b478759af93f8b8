"""Robustness at the program's edges (issue 11: items 4, 6, 7, 8, 11), each on inputs made here.

Hostile-but-fair inputs a user can produce: file names holding Rich markup, config files with
wrong types, captions holding subtitle syntax, hand-edited records, crafted weights, secrets in
URLs. Each test failed before its fix.
"""

from __future__ import annotations

import json
import re
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
    video = make_video(tmp_path / "a[/red]b[bold]:thumbs_up:.mp4")
    code, stdout, stderr = invoke("run", str(video), "--out", str(tmp_path / "out"),
                                  "--stages", "none")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "a[/red]b[bold]:thumbs_up:.mp4" in stdout.replace("\n", "")  # literal: no markup, emoji


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


# --- 7: subtitle text cannot end its cue or inject one ------------------------------------------

INJECTION = "\n\n99\n00:00:00,000 --> 00:00:09,000\nINJECTED"
CAPTIONS = [
    "A dog runs.\n\nThen it stops.",  # a blank line inside a caption
    "Fine" + INJECTION,  # crafted text
    "Tags: <b>bold</b> & <c.red>x</c> -> arrows --> here\r\n\r\n\r\nend",
    "   \n\n  ",  # nothing to show: no cue
]


def write_records(folder: Path, captions: list[str]) -> Path:
    from scenescribe.records import Caption, Scene, SceneRecord

    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(SceneRecord(Scene(i, 2.0 * i, 2.0 * i + 2, 20 * i, 20 * i + 20),
                                    captions={"m": Caption(text, 5)}).to_dict()) + "\n"
             for i, text in enumerate(captions)]
    (folder / "scenes.jsonl").write_text("".join(lines))
    return folder


def parse_cues(text: str, header: str = "") -> list[tuple[str, str, list[str]]]:
    """Cues as a player reads them: blocks split at blank lines; id, timing line, text lines."""
    assert text.startswith(header)
    blocks = [b for b in text[len(header):].split("\n\n") if b.strip()]
    cues = []
    for block in blocks:
        ident, timing, *lines = block.split("\n")
        assert " --> " in timing, block
        assert all("-->" not in line for line in lines), block
        cues.append((ident, timing, lines))
    return cues


def test_srt_cues_stay_whole(tmp_path: Path) -> None:
    folder = write_records(tmp_path / "v", CAPTIONS)
    code, _, stderr = invoke("export", str(folder), "--format", "srt")
    assert code == 0, stderr
    cues = parse_cues((folder / "v.srt").read_text())
    assert [c[0] for c in cues] == ["1", "2", "3"]
    assert [c[1] for c in cues] == ["00:00:00,000 --> 00:00:02,000",
                                    "00:00:02,000 --> 00:00:04,000",
                                    "00:00:04,000 --> 00:00:06,000"]
    assert cues[0][2] == ["A dog runs.", "Then it stops."]
    assert cues[1][2] == ["Fine", "99", "00:00:00,000 → 00:00:09,000", "INJECTED"]
    assert cues[2][2][-1] == "end"


def test_vtt_cues_stay_whole_and_escape_markup(tmp_path: Path) -> None:
    folder = write_records(tmp_path / "v", CAPTIONS)
    code, _, stderr = invoke("export", str(folder), "--format", "vtt")
    assert code == 0, stderr
    cues = parse_cues((folder / "v.vtt").read_text(), "WEBVTT\n\n")
    assert [c[0] for c in cues] == ["scene-0", "scene-1", "scene-2"]
    assert cues[1][2] == ["Fine", "99", "00:00:00,000 --&gt; 00:00:09,000", "INJECTED"]
    assert cues[2][2] == ["Tags: &lt;b&gt;bold&lt;/b&gt; &amp; &lt;c.red&gt;x&lt;/c&gt; -&gt; "
                          "arrows --&gt; here", "end"]


# --- 8: export on hand-edited records and unwritable folders ------------------------------------

def good_line(i: int) -> dict:
    return {"index": i, "start": 2.0 * i, "end": 2.0 * i + 2, "start_frame": 20 * i,
            "end_frame": 20 * i + 20, "captions": {"m": {"text": f"scene {i}", "new_tokens": 2}}}


def edited(line: dict, **changes: object) -> str:
    out = {k: v for k, v in line.items() if k not in changes or changes[k] is not None}
    out.update({k: v for k, v in changes.items() if v is not None})
    return json.dumps(out)


SCENES_CASES = [
    ('{"index": 1, "start": 2.0,', "line 2: not valid JSON"),
    (edited(good_line(1), start="abc"), "line 2: not a scene record"),
    (json.dumps({k: v for k, v in good_line(1).items() if k != "end"}),
     "line 2: not a scene record: missing key 'end'"),
    ("[1, 2, 3]", "line 2: expected a JSON object"),
    (edited(good_line(1), captions=["not", "a", "mapping"]), "line 2: not a scene record"),
    (edited(good_line(1), end=-5.0), "line 2: not a scene record"),
]


@pytest.mark.parametrize(("line", "reason"), SCENES_CASES)
@pytest.mark.parametrize("fmt", ["srt", "json", "html"])
def test_export_of_edited_scenes_is_one_line_error(line: str, reason: str, fmt: str,
                                                   tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    path = folder / "scenes.jsonl"
    path.write_text(json.dumps(good_line(0)) + "\n" + line + "\n" + json.dumps(good_line(2)) + "\n")
    code, _, stderr = invoke("export", str(folder), "--format", fmt)
    assert code == 1 and "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0], stderr
    assert sorted(p.name for p in folder.iterdir()) == ["scenes.jsonl"]  # no partial export


def test_export_of_records_that_are_not_utf8(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "scenes.jsonl").write_bytes(json.dumps(good_line(0)).encode() + b"\n\xff\xfe\n")
    code, _, stderr = invoke("export", str(folder), "--format", "vtt")
    assert code == 1 and "line 2: not UTF-8" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(("facts", "reason"), [
    ('{"video": ', "run.json: line 1: not valid JSON"),
    ("[1, 2]", "run.json: expected a JSON object, found list"),
    ('{"video": {"duration": "long", "path": "x.mp4"}}', "'video.duration' must be"),
    ('{"video": "x.mp4"}', "'video' must be dict"),
    ('{"timings": {"shots": {"compute_s": "fast"}}}', "'timings.shots'"),
])
def test_export_with_edited_run_json(facts: str, reason: str, tmp_path: Path) -> None:
    folder = write_records(tmp_path / "v", ["a caption"])
    (folder / "run.json").write_text(facts)
    for fmt in ("json", "html"):
        code, _, stderr = invoke("export", str(folder), "--format", fmt)
        assert code == 1 and "Traceback" not in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1 and reason in stderr, stderr


def test_export_into_an_unwritable_place(tmp_path: Path) -> None:
    import os

    folder = write_records(tmp_path / "v", ["a caption"])
    targets = [Path("/proc/scenescribe.srt")] if Path("/proc/self").is_dir() else []
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        targets.append(locked / "x.srt")
    if not targets:
        pytest.skip("no unwritable location on this system")
    for target in targets:
        code, _, stderr = invoke("export", str(folder), "--format", "srt", "--output", str(target))
        assert code == 1 and "Traceback" not in stderr, stderr
        assert str(target) in stderr and "cannot write the export" in stderr


# --- 11: weights that would run code; secrets in URLs and messages -------------------------------

class _Payload:
    """Pickles as a call that creates a file: proof of code execution if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "code ran"))


def crafted_weights(tmp_path: Path) -> tuple[Path, Path]:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "train_args": {}}, weights)
    assert not marker.exists()
    return weights, marker


def test_crafted_yolo_weights_are_refused_without_running(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    pytest.importorskip("lap")
    from scenescribe import registry
    from scenescribe.errors import ModelNotFoundError
    from scenescribe.options import ObjectOptions

    weights, marker = crafted_weights(tmp_path)
    backend = registry.create("yolov8n", "objects", options=ObjectOptions(weights=str(weights)),
                              device="cpu")
    with pytest.raises(ModelNotFoundError) as refused:
        backend.load()
    assert not marker.exists(), "the pickle's code ran"
    assert re.search(r"evil\.pt: refused.*\(pathlib\.Path", str(refused.value))


def test_crafted_yolo_weights_through_the_cli(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    pytest.importorskip("lap")
    weights, marker = crafted_weights(tmp_path)
    video = make_video(tmp_path / "clip.mp4")
    config = tmp_path / "c.toml"
    config.write_text(f"[objects]\nweights = {str(weights)!r}\n")
    code, _, stderr = invoke("run", str(video), "--out", str(tmp_path / "out"), "--config",
                             str(config), "--stages", "objects")
    assert not marker.exists(), "the pickle's code ran"
    assert code == 1 and "Traceback" not in stderr
    assert "refused" in stderr and str(weights) in stderr


def test_real_yolo_weights_still_load_safely() -> None:
    pytest.importorskip("ultralytics")
    from conftest import MODELS
    from scenescribe.objects.yolo_weights import load_checkpoint

    ckpt = load_checkpoint(MODELS / "yolo" / "yolov8n.pt")
    model = ckpt.get("ema") or ckpt["model"]
    assert len(model.names) == 80 and model.names[0] == "person"


SECRET_KEY = "sk-test-5ecret-key-0123456789"
URL_SECRET = "p4ssw0rd-in-url"


def test_credentials_in_api_base_never_reach_run_json(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    config = tmp_path / "c.toml"
    config.write_text(f'[speech]\napi_base = "https://me:{URL_SECRET}@asr.invalid/v1"\n'
                      f'[captions]\napi_base = "https://me:{URL_SECRET}@vlm.invalid/v1?api-key=k3y"\n')
    code, _, stderr = invoke("run", str(video), "--out", str(tmp_path / "out"), "--config",
                             str(config), "--stages", "none")
    assert code == 0, stderr
    facts = (tmp_path / "out" / "clip" / "run.json").read_text()
    assert URL_SECRET not in facts and "k3y" not in facts
    options = json.loads(facts)["options"]
    assert options["speech"]["api_base"] == "https://***@asr.invalid/v1"
    assert options["captions"]["api_base"] == "https://***@vlm.invalid/v1?api-key=***"


class _Server:
    """A local OpenAI-compatible server whose answers the test sets; counts requests in flight."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status, self.body, self.delay = 200, b"{}", 0.0
        self.in_flight = self.max_in_flight = self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                import time

                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay)
                with lock:
                    server.in_flight -= 1
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(server.body)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.base = f"http://me:{URL_SECRET}@127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> object:
    pytest.importorskip("httpx")
    for var in ("OPENAI_BASE_URL", "SCENESCRIBE_API_KEY", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    s = _Server()
    yield s
    s.close()


LONG_REPLY = json.dumps({"error": {"type": "invalid_request_error", "message": (
    "Incorrect API key provided: " + SECRET_KEY + " \x1b[31m" + "blah " * 60)}}).encode()


def assert_clean(message: str) -> None:
    assert SECRET_KEY not in message and URL_SECRET not in message, message
    assert "blah " * 17 not in message, "more than ~80 characters of the reply echoed"
    assert "\x1b" not in message


def caption_request(tmp_path: Path) -> object:
    from PIL import Image

    from scenescribe.captions.base import CaptionRequest

    frame = tmp_path / "f.jpg"
    Image.new("RGB", (16, 16)).save(frame)
    return CaptionRequest(0, (str(frame),), context="")


def chat_captioner(base: str, **options: object) -> object:
    from scenescribe import registry
    from scenescribe.options import CaptionOptions

    return registry.create("openai-chat", "captioner", options=CaptionOptions(
        models=("openai-chat",), api_base=base, weights="m", **options), device="cpu")


def test_caption_errors_are_short_and_hold_no_secret(server: _Server, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from scenescribe.errors import ConfigError
    from scenescribe.progress import NullProgress

    caplog.set_level("DEBUG")  # httpx logs each request's URL at INFO
    captioner = chat_captioner(server.base)
    assert URL_SECRET not in json.dumps(captioner.facts() | {"x": 0}, default=str)
    server.status, server.body = 400, LONG_REPLY
    (_, caption), = captioner.caption([caption_request(tmp_path)], NullProgress())
    assert caption.text == "" and "HTTP 400 (invalid_request_error: Incorrect API key" in caption.error
    assert_clean(caption.error)
    assert URL_SECRET not in json.dumps(captioner.facts(), default=str)
    server.status = 401
    with pytest.raises(ConfigError) as refused:
        list(captioner.caption([caption_request(tmp_path)], NullProgress()))
    assert "refused the API key" in str(refused.value) and "HTTP 401" in str(refused.value)
    assert_clean(str(refused.value))
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert_clean(record.getMessage())


def test_speech_errors_are_short_and_hold_no_secret(server: _Server, tmp_path: Path) -> None:
    from scenescribe import registry
    from scenescribe.errors import ConfigError, StageError
    from scenescribe.media import probe
    from scenescribe.options import SpeechOptions
    from scenescribe.progress import NullProgress

    clip = tmp_path / "tone.wav"
    import wave

    with wave.open(str(clip), "wb") as w:  # 2 s of a loud tone: not silence, so it is sent
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        t = np.arange(32000) / 16000
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 20000).astype("<i2").tobytes())
    recognizer = registry.create("openai-transcribe", "speech",
                                 options=SpeechOptions(api_base=server.base), device="cpu")
    recognizer.max_retries, recognizer.backoff_seconds = 1, 0.01
    assert URL_SECRET not in json.dumps(recognizer.facts(), default=str)
    for status, error in ((500, StageError), (400, StageError), (403, ConfigError)):
        server.status, server.body = status, LONG_REPLY
        with pytest.raises(error) as failed:
            recognizer.transcribe(probe(clip), NullProgress())
        assert f"HTTP {status}" in str(failed.value)
        assert_clean(str(failed.value))
        recognizer.unload()


def test_one_shared_client_bounds_requests_in_flight(server: _Server, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from scenescribe.openai_client import OpenAIClient

    server.delay, server.body = 0.1, b'{"ok": true}'
    client = OpenAIClient(server.base, SECRET_KEY, concurrency=2, timeout_s=5)
    with ThreadPoolExecutor(8) as pool:  # more callers than slots
        answers = list(pool.map(lambda _: client.request("GET", f"{client.base}/x").json(),
                                range(8)))
    client.close()
    assert answers == [{"ok": True}] * 8 and server.max_in_flight == 2
    captioner = chat_captioner(server.base, api_concurrency=3)
    captioner.load()
    assert isinstance(captioner.model, OpenAIClient)
    captioner.unload()


def test_yolo_weights_of_other_formats(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from conftest import MODELS
    from scenescribe.objects.yolo_weights import UnsafeCheckpointError, checked_loading

    with checked_loading(MODELS / "yolo" / "yolov8n_int8.tflite"):  # no pickle inside: as given
        pass
    weights, marker = crafted_weights(tmp_path)
    renamed = weights.rename(tmp_path / "evil.pth")  # a pickle under another name
    with (pytest.raises(UnsafeCheckpointError, match=r"evil\.pth: expected a \.pt checkpoint"),
          checked_loading(renamed)):
        pass
    assert not marker.exists()


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
