"""The speech stage's audio read in child processes (``media.audio_child``): the same chunks
as the in-process reader, a bad file failing alone with its name, and no child left behind
by a stream stopped early."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import media
from scenescribe import registry
from scenescribe.errors import InputError, StageError
from scenescribe.media import audio_child, probe
from scenescribe.media.audio_child import ChildReader
from scenescribe.options import SpeechOptions
from scenescribe.progress import NullProgress
from scenescribe.speech.base import AudioReads, SpeechResult
from scenescribe.speech.chunking import speech_chunks
from scenescribe.speech.whisper_parts import Decoded

SPEECH = "synthetic/synthetic_cuts_speech.mp4"
BAD = "bad_inputs/truncated_no_moov.mp4"
CLIPS = [SPEECH, "real/grid/bbaf2n.mpg", BAD, "real/big_buck_bunny_0_30.webm",
         "bad_inputs/silent_audio.mp4"]
LONG = "bad_inputs/long_64x36_1fps.mp4"  # 2 hours of 8 kHz audio


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[2] == y[2] and x[1].dtype == y[1].dtype and np.array_equal(x[1], y[1])
        for x, y in zip(a, b, strict=True))


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every child process ``audio_child`` starts."""
    children: list = []
    start = ChildReader._start

    def spy(self: ChildReader, paths: list[str]) -> object:
        child = start(self, paths)
        children.append(child.worker.process)
        return child

    monkeypatch.setattr(ChildReader, "_start", spy)
    return children


@pytest.mark.parametrize("readers", [1, 2])
def test_children_give_the_in_process_chunks_and_a_bad_file_fails_alone(
        readers: int, started: list) -> None:
    paths = [str(media(rel)) for rel in CLIPS]
    with ChildReader(paths, readers) as reader:
        for path in paths:
            if path.endswith(BAD):
                with pytest.raises(InputError) as caught:
                    list(reader.chunks(path))
                with pytest.raises(InputError) as alone:
                    list(speech_chunks(path))
                assert str(caught.value) == str(alone.value)  # the same one line, the file named
                assert path in str(caught.value) and "\n" not in str(caught.value)
                continue
            assert _same(list(reader.chunks(path)), list(speech_chunks(path))), path
    assert len(started) == readers  # one process per lane, whatever the number of videos
    assert all(p.poll() is not None for p in started)


def _recognizer():
    recognizer = registry.create("whisper-tiny.en", "speech",
                                 options=SpeechOptions(batch_size=2), device="cpu")
    seen: list[tuple[float, int]] = []

    def decode(batch: list) -> list[Decoded]:  # no model: the chunks are what is checked
        seen.extend((offset, len(samples)) for offset, samples in batch)
        return [Decoded([], "", "en", 1.0, 1.0, -9.0) for _ in batch]

    recognizer.decode = decode
    return recognizer, seen


def test_the_pooled_stream_reads_in_children_as_it_did_in_process(
        monkeypatch: pytest.MonkeyPatch, started: list) -> None:
    infos = [(probe(media(rel)), NullProgress()) for rel in CLIPS if rel != BAD]
    infos.insert(2, (probe(media(SPEECH)), NullProgress()))  # a file twice is read twice
    runs = {}
    for readers in ("0", "2"):
        monkeypatch.setenv("SCENESCRIBE_AUDIO_READERS", readers)
        recognizer, seen = _recognizer()
        reads = AudioReads()
        results = dict(recognizer.transcribe_many(infos, reads))
        assert sorted(reads.seconds) == list(range(len(infos)))
        assert reads.finished_at is not None
        runs[readers] = (results, sorted(seen))
    (old, old_seen), (new, new_seen) = runs["0"], runs["2"]
    assert new_seen == old_seen != []  # the same chunks reached the model
    assert {i: r.extra for i, r in new.items()} == {i: r.extra for i, r in old.items()}
    assert all(isinstance(r, SpeechResult) for r in new.values())
    assert len(started) == 2 and all(p.poll() is not None for p in started)


def test_a_damaged_file_in_the_pooled_stream_fails_alone_naming_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The file probes (so the stage reads it) but its audio cannot be decoded."""
    good = probe(media(SPEECH))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    infos = [(good, NullProgress()), (dataclasses.replace(good, path=broken), NullProgress()),
             (probe(media("real/grid/lrwp9a.mpg")), NullProgress())]
    monkeypatch.setenv("SCENESCRIBE_AUDIO_READERS", "2")
    recognizer, _ = _recognizer()
    results = dict(recognizer.transcribe_many(infos))
    assert isinstance(results[1], InputError)
    assert str(broken) in str(results[1]) and "\n" not in str(results[1])
    assert results[0].extra["chunks"] == 2 and results[2].extra["chunks"] == 1


def test_a_stream_stopped_early_leaves_no_child_and_no_thread(
        monkeypatch: pytest.MonkeyPatch, started: list) -> None:
    monkeypatch.setenv("SCENESCRIBE_AUDIO_READERS", "2")
    recognizer, _ = _recognizer()
    infos = [(probe(media(rel)), NullProgress()) for rel in (SPEECH, LONG, SPEECH, LONG)]
    stream = recognizer.transcribe_many(infos)
    first = next(stream)  # the first video done; the long ones are being read
    assert first[0] == 0
    stream.close()
    assert len(started) == 2
    assert all(p.poll() is not None for p in started)
    assert not [t for t in threading.enumerate() if t.name == "speech-audio"]


def test_close_ends_a_read_blocked_in_another_thread(started: list) -> None:
    long = str(media(LONG))
    reader = ChildReader([long], 1)
    got: list = []
    error: list[BaseException] = []

    def read() -> None:
        try:
            for chunk in reader.chunks(long):
                got.append(chunk[0])
                time.sleep(0.05)  # a slow consumer: the child waits on the socket
        except StageError as exc:
            error.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got, "no chunk came"
    reader.close()
    thread.join(10)
    assert not thread.is_alive()
    assert error and "stopped" in str(error[0]) and long in str(error[0])
    assert all(p.poll() is not None for p in started)
    with pytest.raises(StageError, match="stopped"):
        next(reader.chunks(long))


def test_a_child_that_dies_fails_its_video_and_the_lane_goes_on(started: list) -> None:
    paths = [str(media(LONG)), str(media(SPEECH))]
    with ChildReader([paths[0], paths[1], paths[0]], 2) as reader:
        stream = reader.chunks(paths[0])
        next(stream)
        started[0].kill()  # lane 0's child, as by the OOM killer
        with pytest.raises(StageError, match="audio reader process failed") as caught:
            list(stream)
        assert paths[0] in str(caught.value)
        assert _same(list(reader.chunks(paths[1])), list(speech_chunks(paths[1])))
        assert next(reader.chunks(paths[0]))[0] == 0.0  # lane 0 again, in a new child
    assert len(started) == 3 and all(p.poll() is not None for p in started)


def test_the_readers_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCENESCRIBE_AUDIO_READERS", raising=False)
    assert audio_child.audio_readers() == audio_child.READERS
    monkeypatch.setenv("SCENESCRIBE_AUDIO_READERS", "0")
    assert audio_child.audio_readers() == 0


def test_damage_a_child_found_joins_this_process_report_and_is_not_warned_twice(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Six audio packets overwritten: the child's warning is logged here once, its span is in
    this process's ``damage_report``, and an in-process pass over the audio does not warn again."""
    import logging

    import av

    from scenescribe.media import damage_report, decode_audio
    from test_media_robust import _write

    clip = _write(tmp_path / "clean.mp4", 125)
    with av.open(str(clip)) as container:
        packets = [p for p in container.demux(audio=0) if p.size]
    data = bytearray(clip.read_bytes())
    for packet in packets[len(packets) // 2:len(packets) // 2 + 6]:
        data[packet.pos:packet.pos + packet.size] = b"\xff" * packet.size
    damaged = tmp_path / "damaged_audio.mp4"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="scenescribe.media"):
        with ChildReader([str(damaged)], 1) as reader:
            assert list(reader.chunks(str(damaged)))
        decode_audio(damaged)
    (span,) = [s for s in damage_report(damaged) if s.stream == "audio"]
    assert 1.5 < span.start < span.end < 4.5
    warned = [r for r in caplog.records if "damaged audio" in r.getMessage()]
    assert len(warned) == 1 and str(damaged) in warned[0].getMessage()
