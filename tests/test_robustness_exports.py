"""Exports on hostile text and hand-edited records (issue 11, items 7 and 8), inputs made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke

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


