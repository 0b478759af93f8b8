"""Stage 2 through the pipeline: several tiny captioners over one Stage 1 computation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import scenescribe
from scenescribe.options import CaptionOptions, RunOptions
from scenescribe.testing.tiny import build_tiny

MODELS = ("llava-v1.6-mistral-7b", "smolvlm2")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-vlms")
    for name in (*MODELS, "qwen2.5-vl-7b"):
        build_tiny(name, folder)
    return folder


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Spy on the Stage 1 entry points so the test sees how often each ran."""
    from scenescribe.sounds.yamnet import YamnetTagger
    from scenescribe.speech.faster_whisper import FasterWhisperRecognizer

    calls: Counter = Counter()
    for cls, method in ((FasterWhisperRecognizer, "transcribe"), (YamnetTagger, "tag_scenes")):
        original = getattr(cls, method)

        def spy(self: Any, *args: Any, _original: Any = original, _name: str = method,
                **kwargs: Any) -> Any:
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, spy)
    return calls


def test_two_captioners_share_one_stage1(tmp_path: Path, synthetic_clip: Path, tiny_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_calls(monkeypatch)
    # Tiny VLMs live in tiny_dir, Stage 1 weights in the shared model directory: name the paths.
    options = RunOptions(stages=("speech", "sounds"), device="cpu", captions=CaptionOptions(
        models=tuple(f"{m}={_tiny_path(tiny_dir, m)}" for m in MODELS), max_new_tokens=6))
    result = scenescribe.run(synthetic_clip, tmp_path, options)
    assert not result.failed and not result.warnings
    assert calls == {"transcribe": 1, "tag_scenes": 1}
    records = [json.loads(x) for x in
               (tmp_path / "synthetic_cuts_speech" / "scenes.jsonl").read_text().splitlines()]
    assert len(records) == 7
    for r in records:
        assert set(r["captions"]) == set(MODELS)
        assert all(c["new_tokens"] >= 1 and c["text"] for c in r["captions"].values())
        assert "summary" not in r  # captions exist, so no fallback summary
    for model in MODELS:
        assert (tmp_path / "synthetic_cuts_speech" / "captions" / f"{model}.jsonl").exists()

    # Adding a model later reuses every Stage 1 result and keeps the earlier captions.
    more = RunOptions(stages=options.stages, device="cpu", captions=CaptionOptions(
        models=(f"qwen2.5-vl-7b={_tiny_path(tiny_dir, 'qwen2.5-vl-7b')}",), max_new_tokens=6))
    again = scenescribe.run(synthetic_clip, tmp_path, more)
    assert calls == {"transcribe": 1, "tag_scenes": 1}
    timings = again.videos[0].timings
    assert timings["speech"]["cached"] and timings["sounds"]["cached"]
    records = [json.loads(x) for x in
               (tmp_path / "synthetic_cuts_speech" / "scenes.jsonl").read_text().splitlines()]
    assert all(set(r["captions"]) == {*MODELS, "qwen2.5-vl-7b"} for r in records)


def test_unavailable_captioner_falls_back_to_summaries(tmp_path: Path, synthetic_clip: Path) -> None:
    options = RunOptions(stages=(), device="cpu",
                         captions=CaptionOptions(models=("llava-v1.6-mistral-7b",)))
    result = scenescribe.run(synthetic_clip, tmp_path / "out", options)
    assert len(result.warnings) == 1 and "llava-v1.6-mistral-7b" in result.warnings[0]
    first = json.loads((tmp_path / "out" / "synthetic_cuts_speech" / "scenes.jsonl")
                       .read_text().splitlines()[0])
    assert first["captions"] == {} and first["summary"]["source"] == "stage1-facts"


def _tiny_path(folder: Path, name: str) -> Path:
    from scenescribe import registry

    entry = registry.get_entry(name, "captioner")
    assert entry.checkpoint is not None
    return folder / entry.checkpoint.split("/")[-1]


def test_scenes_of_several_videos_share_batches(tmp_path: Path, synthetic_clip: Path,
                                                tiny_dir: Path) -> None:
    videos = []
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).symlink_to(synthetic_clip)
        videos.append(tmp_path / name)
    model = f"smolvlm2={_tiny_path(tiny_dir, 'smolvlm2')}"
    options = RunOptions(stages=(), device="cpu", captions=CaptionOptions(
        models=(model,), max_new_tokens=4, batch_size=4))
    result = scenescribe.run(videos, tmp_path / "out", options)
    assert not result.failed
    per_video = {}
    for stem in ("a", "b"):
        records = [json.loads(x) for x in
                   (tmp_path / "out" / stem / "scenes.jsonl").read_text().splitlines()]
        per_video[stem] = [r["captions"]["smolvlm2"]["text"] for r in records]
        assert len(records) == 7 and all(per_video[stem])
    # Same pixels, same greedy captions: routing back to the right video and scene is exact.
    assert per_video["a"] == per_video["b"]
    shares = [v.timings["captions[smolvlm2]"]["compute_s"] for v in result.videos]
    assert shares[0] == pytest.approx(shares[1])
    # Where the engine's time went, shared out the same way: its calls within the compute.
    for v in result.videos:
        timing = v.timings["captions[smolvlm2]"]
        assert 0 < timing["generate_s"] <= timing["compute_s"]
        assert 0 <= timing["prepare_wait_s"] <= timing["compute_s"]
