"""Pooled Whisper: every video's chunks in one batched stream, results routed back per video.

The scheduler (``speech.pool``) is checked with plain functions for routing, bounded memory and
failures; the real tiny.en model checks that pooling changes neither words nor times, and the
pipeline checks that the speech stage writes each video's checkpoint from the pooled stream."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, ground_truth, media
from scenescribe import registry
from scenescribe.media import SAMPLE_RATE, probe
from scenescribe.options import RunOptions, SpeechOptions
from scenescribe.progress import NullProgress
from scenescribe.records import AudioStreamInfo, VideoInfo
from scenescribe.speech.base import AudioReads, SpeechResult
from scenescribe.speech.pool import _Chunk, pick_batch, transcribe_pooled

SYNTHETIC = "synthetic/synthetic_cuts_speech.mp4"
CLIPS = [SYNTHETIC, "real/grid/bbaf2n.mpg", "bad_inputs/no_audio.mp4", "real/grid/lrwp9a.mpg",
         "real/big_buck_bunny_0_30.webm", "real/grid/id2_vcd_swwp2s.mpg", "real/grid/sbwe5n.mpg"]


def _info(name: str, has_audio: bool = True) -> VideoInfo:
    streams = (AudioStreamInfo(0, "aac", 16000, 1),) if has_audio else ()
    return VideoInfo(path=name, size_bytes=1, container="mp4", duration=60.0, has_video=True,
                     audio_streams=streams)


# The scheduler, with a decode that records what it saw


class Recorder:
    """Chunks of known lengths per video; a decode that tags each chunk with its video."""

    def __init__(self, lengths: dict[str, list[float]], fail: str | None = None) -> None:
        self.lengths, self.fail = lengths, fail
        self.batches: list[list[tuple[str, float, int]]] = []
        self.alive = self.most_alive = 0  # chunks read and not yet decoded
        self.lock = threading.Lock()

    def chunks(self, video: VideoInfo, task: object, extra: dict):
        extra["chunks"] = 0
        for k, seconds in enumerate(self.lengths[video.path]):
            if video.path == self.fail and k == 1:
                raise OSError(f"{video.path}: cannot read audio")
            extra["chunks"] += 1
            with self.lock:
                self.alive += 1
                self.most_alive = max(self.most_alive, self.alive)
            # The offset encodes the video and chunk, the samples' value the video.
            yield 100.0 * k, np.full(int(seconds * SAMPLE_RATE), ord(video.path[0]), np.float32)

    def decode(self, batch: list[tuple[float, np.ndarray]]) -> list[tuple[str, float, float]]:
        with self.lock:
            self.alive -= len(batch)
        self.batches.append([(chr(int(s[0])), o, len(s)) for o, s in batch])
        return [(chr(int(s[0])), o, len(s) / SAMPLE_RATE) for o, s in batch]

    def run(self, names: list[str], size: int, no_audio: set[str] = frozenset(),
            reads: AudioReads | None = None):
        videos = [(_info(n, n not in no_audio), NullProgress()) for n in names]

        def finish(kept: list, extra: dict) -> SpeechResult:
            return SpeechResult(extra={**extra, "kept": kept})

        return list(transcribe_pooled(videos, self.chunks, self.decode,
                                      lambda d: d[2] > 1.0, finish, size, reads))


def test_chunks_of_all_videos_share_batches_and_come_back_to_their_video() -> None:
    lengths = {"a": [30, 30, 12], "b": [5], "c": [30, 0.5, 30], "d": [], "e": [8, 30]}
    rec = Recorder(lengths)
    reads = AudioReads()
    before = time.perf_counter()
    out = rec.run(list("abcdef"), size=4, no_audio={"f"}, reads=reads)
    assert sorted(i for i, _ in out) == [0, 1, 2, 3, 4, 5]
    assert sorted(reads.seconds) == [0, 1, 2, 3, 4]  # the reader's time on each video with audio
    assert reads.finished_at is not None and before < reads.finished_at < time.perf_counter()
    results = dict(out)
    for i, name in enumerate("abcde"):
        kept = results[i].extra["kept"]
        assert all(v == name for v, _, _ in kept)  # nothing crossed over
        expected = [(100.0 * k, s) for k, s in enumerate(lengths[name]) if s > 1.0]
        assert sorted((o, s) for _, o, s in kept) == expected  # all, the guard's keep applied
        assert results[i].extra["chunks"] == len(lengths[name])
    assert results[5] == SpeechResult()  # no audio: empty, no chunk read
    assert len(rec.batches) == 3 and [len(b) for b in rec.batches] == [4, 4, 1]
    assert len({v for v, _, _ in rec.batches[0]}) >= 2  # pooled across videos


def test_window_is_bounded_and_longest_first_with_no_chunk_starved() -> None:
    lengths = {f"v{i}": [float(1 + (7 * i + k) % 29) for k in range(6)] for i in range(20)}
    rec = Recorder(lengths)
    out = rec.run(list(lengths), size=4)
    assert len(out) == 20
    # Reader queue (2 batches) + window (2 batches) + the chunk in hand: never the folder.
    assert rec.most_alive <= 4 * 4 + 2, rec.most_alive
    assert sum(len(b) for b in rec.batches) == 120


def test_pick_batch_takes_passed_over_chunks_first_then_longest() -> None:
    window = [_Chunk(0, 0.0, np.zeros(n, np.float32)) for n in (5, 50, 20, 40, 10)]
    batch, rest = pick_batch(window, 2)
    assert [len(c.samples) for c in batch] == [50, 40]
    assert all(c.passed for c in rest)
    later = [*rest, _Chunk(1, 0.0, np.zeros(99, np.float32))]
    batch, rest = pick_batch(later, 2)
    assert [len(c.samples) for c in batch] == [20, 10]  # waited once: before the new 99


def test_a_video_whose_audio_fails_fails_alone() -> None:
    rec = Recorder({"a": [30, 30], "b": [30, 30, 30], "c": [10]}, fail="b")
    out = dict(rec.run(list("abc"), size=2))
    assert isinstance(out[1], OSError) and "cannot read audio" in str(out[1])
    assert len(out[0].extra["kept"]) == 2 and len(out[2].extra["kept"]) == 1


def test_a_model_failure_stops_the_stream_and_its_reader() -> None:
    before = {t.ident for t in threading.enumerate()}

    def decode(batch: list) -> list:
        raise RuntimeError("CUDA out of memory")

    rec = Recorder({f"v{i}": [30] * 10 for i in range(10)})
    stream = transcribe_pooled([(_info(n), NullProgress()) for n in rec.lengths], rec.chunks,
                               decode, bool, lambda kept, extra: SpeechResult(), 2)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(stream)
    leftover = [t for t in threading.enumerate()
                if t.ident not in before and t.name == "speech-audio"]
    assert leftover == []


# The real model: pooled equals per video


def _create(**options: object):
    return registry.create("whisper-tiny.en", "speech", options=SpeechOptions(**options),
                           device="cpu", model_dir=MODELS)


@pytest.mark.slow
def test_pooled_tiny_en_matches_the_per_video_path_on_real_speech() -> None:
    import jiwer

    from test_speech import normalise

    recognizer = _create(batch_size=4)  # chunks of several clips share each batch
    infos = [probe(media(rel)) for rel in CLIPS]
    single = [recognizer.transcribe(info, NullProgress()) for info in infos]
    pooled = dict(recognizer.transcribe_many([(info, NullProgress()) for info in infos]))
    assert sorted(pooled) == list(range(len(CLIPS)))
    for rel, one, many in zip(CLIPS, single, [pooled[i] for i in range(len(CLIPS))],
                              strict=True):
        assert isinstance(many, SpeechResult), (rel, many)
        assert [w.text for w in many.words] == [w.text for w in one.words], rel
        np.testing.assert_allclose([w.start for w in many.words], [w.start for w in one.words],
                                   atol=0.1, err_msg=rel)
        np.testing.assert_allclose([w.end for w in many.words], [w.end for w in one.words],
                                   atol=0.1, err_msg=rel)
        assert many.language == one.language and many.extra == one.extra
    assert pooled[2].words == () and pooled[4].words == ()  # no audio; music only
    assert all(pooled[i].words for i in (0, 1, 3, 5, 6))
    reference = " ".join(s["text"] for s in
                         ground_truth("synthetic/synthetic_cuts_speech.gt.json")["transcript"])
    score = jiwer.wer(normalise(reference), normalise(" ".join(w.text for w in pooled[0].words)))
    print(f"\npooled tiny.en synthetic WER {score:.3f}")
    assert score <= 0.05
    recognizer.unload()


@pytest.mark.slow
def test_speech_stage_writes_each_videos_checkpoint_from_the_pooled_stream(
        tmp_path: Path) -> None:
    import scenescribe

    clips = [media(SYNTHETIC), media("real/grid/lrwp9a.mpg"), media("bad_inputs/no_audio.mp4")]
    options = RunOptions(stages=("speech",), device="cpu", parallel=False,
                         speech=SpeechOptions(backend="whisper-tiny.en", batch_size=2))
    result = scenescribe.run(clips, tmp_path, options)
    assert not result.failed
    recognizer = _create()
    for clip in clips:
        records = [json.loads(line) for line in
                   (tmp_path / clip.stem / "scenes.jsonl").read_text().splitlines()]
        heard = [w["text"] for r in records for w in (r.get("transcript") or {}).get("words", ())]
        alone = recognizer.transcribe(probe(clip), NullProgress())
        assert heard == [w.text for w in alone.words], clip
    assert [v.timings["speech"]["cached"] for v in result.videos] == [False] * 3
    again = scenescribe.run(clips, tmp_path, options)
    assert all(v.timings["speech"]["cached"] for v in again.videos)


def test_a_reader_bug_is_raised_not_waited_on() -> None:
    class Broken:
        def task(self, description: str, total: float | None = None) -> object:
            raise ValueError("progress display gone")

    rec = Recorder({"a": [30]})
    stream = transcribe_pooled([(_info("a"), Broken())], rec.chunks, rec.decode, bool,
                               lambda kept, extra: SpeechResult(), 2)
    with pytest.raises(ValueError, match="display gone"):
        list(stream)


def test_the_speech_stage_reads_audio_while_whisper_loads(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage loads Whisper on a thread of its own while the pooled stream reads the audio:
    on the H200 the load took 12-16 s (its import and ``from_pretrained`` under the process
    lock) and reading W1's audio seconds more. The words are those of the plain path, the
    compute time starts when the model is loaded, and the timing says how long the reader
    took and how long its audio waited for the model."""
    from scenescribe import backend
    from scenescribe.graph import RunContext, StageOutput, Task, Video
    from scenescribe.speech import hf_whisper
    from scenescribe.speech_stages import SpeechStage
    from scenescribe.workspace import WorkFolder

    reading = threading.Event()
    chunks = hf_whisper.TransformersWhisperRecognizer._chunks

    def watched(*args: object, **kwargs: object) -> object:
        reading.set()
        yield from chunks(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hf_whisper.TransformersWhisperRecognizer, "_chunks", watched)
    recognizer = _create(batch_size=2)
    stage = SpeechStage(recognizer)
    clip = media("real/grid/lrwp9a.mpg")
    video = Video(clip, WorkFolder(tmp_path / "out"))
    video.folder.make()
    task = Task(video, "k", {"probe": StageOutput("p", False, meta={"info": probe(clip)})})
    outcomes: dict[int, object] = {}
    with backend._IMPORT_LOCK:  # another stage's model is loading (importing)
        worker = threading.Thread(target=lambda: outcomes.update(
            stage.run([task], RunContext(NullProgress()))))
        worker.start()
        assert reading.wait(60), "the audio was not read while the model waited to load"
        assert not recognizer.loaded
    worker.join(120)
    out = outcomes[0]
    assert isinstance(out, StageOutput) and not out.cached
    alone = recognizer.transcribe(probe(clip), NullProgress())
    assert [w.text for w in out.meta["words"]] == [w.text for w in alone.words] != []
    assert out.timing["compute_s"] > 0 and out.timing["load_s"] > 0
    assert out.timing["audio_read_s"] > 0 and out.timing["model_wait_s"] >= 0
    # The model's phases: all of them ran, within the stream's compute (one video: all of it).
    phases = [out.timing[f"{p}_s"] for p in ("encode", "decode", "align", "words")]
    assert all(t > 0 for t in phases)
    assert sum(phases) <= out.timing["compute_s"]


def test_a_batch_shares_the_gpu_unless_the_exclusive_knob_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``SCENESCRIBE_SPEECH_EXCLUSIVE=1`` makes a CUDA batch hold the GPU alone; by default, and
    on the CPU whatever the knob, it holds a share as the other components do."""
    import threading

    from scenescribe import gpu_share

    recognizer = _create()
    me = threading.current_thread()
    for device, knob, alone in (("cuda", None, False), ("cuda", "1", True),
                                ("cpu", "1", False)):
        if knob is None:
            monkeypatch.delenv("SCENESCRIBE_SPEECH_EXCLUSIVE", raising=False)
        else:
            monkeypatch.setenv("SCENESCRIBE_SPEECH_EXCLUSIVE", knob)
        monkeypatch.setattr(recognizer, "device", device)
        with recognizer._gpu_hold():
            assert (gpu_share._SHARE._exclusive is me) is alone
            assert gpu_share._SHARE._active[False] == (0 if alone else 1)
