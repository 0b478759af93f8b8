"""The audio spool: the speech reader's decode kept on disk for the sound tagger.

The spool's windows must be exactly the samples the tagger's own decode gives (so its tags do
not change), a spool is read only once sealed and never rewritten, and a run leaves none behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_ast, media
from scenescribe.media import SAMPLE_RATE
from scenescribe.media.audio_child import ChildReader
from scenescribe.media.audio_spool import (
    DATA,
    SEALED,
    AudioSpool,
    audio_spool_folder,
    discard_audio_spools,
    fits,
    teeing,
)
from scenescribe.media.spool import discard
from scenescribe.sounds.windows import read_windows
from scenescribe.speech.chunking import speech_chunks

SYNTHETIC = "synthetic/synthetic_cuts_speech.mp4"
BBB = "real/big_buck_bunny_0_30.webm"


def _windows(samples: int) -> list[tuple[int, int]]:
    """Windows as a tagger plans them (sorted by start): short and long, overlapping, one
    running past the end of the audio and one wholly after it."""
    return [(0, 400), (0, 164_000), (48_000, 48_000), (82_000, 164_000), (samples - 1_000, 48_000),
            (samples + 5, 300)]


@pytest.mark.parametrize("clip", [SYNTHETIC, BBB])
def test_windows_from_the_speech_chunks_equal_the_taggers_own_decode(
        clip: str, tmp_path: Path) -> None:
    path = str(media(clip))
    spool = AudioSpool.create(tmp_path / "audio-k", SAMPLE_RATE)
    assert spool is not None and not spool.sealed
    # The speech reader's chunks (10 s pieces, so several pieces and chunks) pass through.
    passed = list(spool.tee(speech_chunks(path, block_seconds=10.0, search_seconds=3.0)))
    assert len(passed) > 2 and all(
        a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2] == b[2]
        for a, b in zip(passed, speech_chunks(path, block_seconds=10.0, search_seconds=3.0),
                        strict=True))
    assert spool.sealed
    opened = AudioSpool.open(tmp_path / "audio-k", SAMPLE_RATE)
    assert opened is not None and opened.samples == spool.samples
    assert spool.samples == sum(len(s) for _, s, _ in passed)
    windows = _windows(spool.samples)
    own = list(read_windows(path, windows, SAMPLE_RATE))
    spooled = list(opened.windows(windows))
    for (start, length), a, b in zip(windows, own, spooled, strict=True):
        assert a.dtype == b.dtype == np.float32 and len(a) == len(b) == length
        assert np.array_equal(a, b), (clip, start, length)
    assert not spooled[-1].any()  # after the end: silence


def test_a_spool_filled_from_the_child_readers_is_the_same(tmp_path: Path) -> None:
    """The pooled speech stream reads in child processes (``audio_child``); ``teeing`` fills
    each path's spool the first time that path is read, and only that path's."""
    clips = [str(media(SYNTHETIC)), str(media(BBB))]
    spool = AudioSpool.create(tmp_path / "audio-a", SAMPLE_RATE)
    assert spool is not None
    with ChildReader(clips, 2) as children:
        read = teeing(children.chunks, {clips[1]: spool})
        for clip in clips:
            for _ in read(clip):
                pass
    assert spool.sealed
    windows = _windows(spool.samples or 0)
    for a, b in zip(read_windows(clips[1], windows, SAMPLE_RATE), spool.windows(windows),
                    strict=True):
        assert np.array_equal(a, b)


def test_a_stream_that_stops_early_or_fails_leaves_no_spool(tmp_path: Path) -> None:
    path = str(media(SYNTHETIC))
    closed = AudioSpool.create(tmp_path / "audio-closed", SAMPLE_RATE)
    assert closed is not None
    stream = closed.tee(speech_chunks(path))
    next(stream)
    stream.close()  # the consumer stopped (a failed model)
    assert not (tmp_path / "audio-closed").exists() and not closed.sealed

    def broken() -> object:
        yield from list(speech_chunks(path))[:1]
        raise OSError("disk read failed")

    failed = AudioSpool.create(tmp_path / "audio-failed", SAMPLE_RATE)
    assert failed is not None
    with pytest.raises(OSError, match="disk read failed"):
        list(failed.tee(broken()))  # type: ignore[arg-type]
    assert not (tmp_path / "audio-failed").exists()
    assert AudioSpool.open(tmp_path / "audio-failed", SAMPLE_RATE) is None


def test_only_a_whole_sealed_spool_at_the_rate_is_read_and_a_sealed_one_is_kept(
        tmp_path: Path) -> None:
    folder = tmp_path / "audio-k"
    spool = AudioSpool.create(folder, SAMPLE_RATE)
    assert spool is not None
    chunks = [(0.0, np.ones(16_000, np.float32), False), (1.0, np.zeros(8_000, np.float32), True)]
    list(spool.tee(chunks))
    assert AudioSpool.open(folder, 22_050) is None  # another rate: decoded again
    assert AudioSpool.create(folder, SAMPLE_RATE) is None  # sealed: reused, never rewritten
    assert AudioSpool.open(folder, SAMPLE_RATE) is not None
    with (folder / DATA).open("r+b") as f:
        f.truncate(100)  # cut short (a damaged disk): not trusted
    assert AudioSpool.open(folder, SAMPLE_RATE) is None
    (folder / SEALED).unlink()
    (folder / DATA).write_bytes(b"\0" * 40)  # a killed run's unsealed leftovers: replaced
    again = AudioSpool.create(folder, SAMPLE_RATE)
    assert again is not None and not (folder / DATA).exists()
    for hostile in ({"version": 1, "samples": "x", "sample_rate": 16000}, [1, 2], None, 7):
        (folder / SEALED).write_text(json.dumps(hostile))
        assert AudioSpool.open(folder, SAMPLE_RATE) is None


def test_the_budget_and_the_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / ".work"
    where = audio_spool_folder(work, "abc")
    assert fits(where, 3600.0, SAMPLE_RATE)  # about 230 MB an hour
    assert not fits(where, float("nan"), SAMPLE_RATE) and not fits(where, 0.0, SAMPLE_RATE)
    monkeypatch.setenv("SCENESCRIBE_SPOOL_GB", "0")  # spools off
    assert not fits(where, 30.0, SAMPLE_RATE)
    where.mkdir(parents=True)
    other = work / "spool" / "detections-abc"
    other.mkdir()
    discard_audio_spools(work)
    assert not where.exists() and other.exists()  # the frame spool is not the audio's
    shutil.rmtree(other)
    discard_audio_spools(work)
    assert not (work / "spool").exists()  # the run is over: the empty folder goes too


def test_removing_a_spool_keeps_the_folder_another_stage_is_creating_its_own_in(
        tmp_path: Path) -> None:
    """The speech stage clears a killed run's audio spool while the shot detector creates its
    frame spool beside it (both at the run's start): removing the now empty folder of spools
    between the detector's two ``mkdir``s failed its video on the H200 (FileNotFoundError)."""
    work = tmp_path / ".work"
    (work / "spool").mkdir(parents=True)  # the detector's first mkdir, its own folder next
    leftover = audio_spool_folder(work, "k")
    leftover.mkdir()
    (leftover / DATA).write_bytes(b"\0" * 8)  # unsealed
    discard(leftover)
    assert not leftover.exists() and (work / "spool").is_dir()
    assert AudioSpool.create(leftover, SAMPLE_RATE) is not None and (work / "spool").is_dir()


def test_a_run_tags_sounds_from_the_speech_stages_audio_and_leaves_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Speech (pooled tiny.en) and sounds (tiny AST) on two clips: the tagger reads every
    window from the spool the speech reader filled, its tags are those of a run without spools,
    and no spool is left behind."""
    import scenescribe
    from scenescribe.options import RunOptions, SoundOptions, SpeechOptions
    from scenescribe.sounds import windows as sound_windows

    ast = make_tiny_ast(tmp_path / "tiny-ast")
    clips = [media(SYNTHETIC), media(BBB)]
    # Batches of 8: the reader queues 16 chunks ahead of the model, all of both clips', so
    # their audio is whole on disk before the tagger starts (after the shots). A reader held
    # back by the model would leave the tagger to decode on its own (the fallback).
    options = RunOptions(stages=("speech", "sounds"), device="cpu",
                         speech=SpeechOptions(backend="whisper-tiny.en", batch_size=8),
                         sounds=SoundOptions(backend="ast-audioset", weights=str(ast),
                                             top_k=3, min_score=0.0))
    decoded: list[str] = []
    own = sound_windows.read_windows

    def counted(path: str, *args: object, **kwargs: object) -> object:
        decoded.append(path)
        return own(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sound_windows, "read_windows", counted)
    spooled = scenescribe.run(clips, tmp_path / "spooled", options)
    assert not spooled.failed and decoded == []  # every window from the spools
    assert not list((tmp_path / "spooled").rglob("audio-*"))
    monkeypatch.setenv("SCENESCRIBE_SPOOL_GB", "0")
    plain = scenescribe.run(clips, tmp_path / "plain", options)
    assert not plain.failed and sorted(decoded) == sorted(map(str, clips))
    for clip in clips:
        lines = [(tmp_path / run / clip.stem / "scenes.jsonl").read_text().splitlines()
                 for run in ("spooled", "plain")]
        tags = [[json.loads(line)["sounds"] for line in run] for run in lines]
        assert tags[0] == tags[1] and len(tags[0]) >= 1, clip
