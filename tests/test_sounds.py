"""Sound tagging: window arithmetic and pooling, YAMNet's real weights on clips with ground
truth, and AST's real architecture built tiny with random weights through the registry."""

from __future__ import annotations

import csv
import itertools
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, ground_truth, make_tiny_ast, media
from scenescribe import registry
from scenescribe.errors import InputError
from scenescribe.media import probe
from scenescribe.options import SoundOptions
from scenescribe.progress import NullProgress
from scenescribe.records import Scene, SoundTag, VideoInfo
from scenescribe.sounds.windows import (
    SceneScores,
    WindowedTagger,
    WindowSpec,
    analysis_span,
    plan,
    pool,
    read_windows,
    span_windows,
    top_tags,
)

SYNTHETIC = "synthetic/synthetic_cuts_speech.mp4"
SYNTHETIC_GT = "synthetic/synthetic_cuts_speech.gt.json"
# AudioSet labels that count as each kind of ground-truth sound. YAMNet hears a pure sine as a
# telephone signal (Telephone, Dial tone, Busy signal, Sidetone, Alarm), so those count as tones.
SPEECH = {"Speech", "Narration, monologue", "Male speech, man speaking", "Conversation",
          "Female speech, woman speaking", "Child speech, kid speaking", "Speech synthesizer"}
TONE = {"Sine wave", "Beep, bleep", "Chirp tone", "Dial tone", "Busy signal", "Sidetone",
        "Telephone", "Buzzer", "Hum", "Alarm", "Tuning fork", "Electronic tuner", "Ringtone"}
NOISE = {"White noise", "Pink noise", "Noise", "Static", "Environmental noise", "Hiss"}


def _labels(tags: Sequence[SoundTag]) -> set[str]:
    return {t.label for t in tags}


def _well_formed(tags: Sequence[SoundTag], options: SoundOptions) -> None:
    scores = [t.score for t in tags]
    assert scores == sorted(scores, reverse=True)
    assert len(tags) <= options.top_k
    assert all(options.min_score <= s <= 1.0 for s in scores)
    assert len(_labels(tags)) == len(tags)


def _tag(tagger: object, video: VideoInfo, scenes: list[Scene]) -> dict[int, list[SoundTag]]:
    out = list(tagger.tag_scenes(video, scenes, NullProgress()))  # type: ignore[attr-defined]
    assert [i for i, _ in out] == [s.index for s in scenes]  # every scene, in the given order
    return dict(out)


def _gt_scenes(rel: str) -> list[Scene]:
    return [Scene(s["index"], s["start_s"], s["end_s"], s["start_frame"], s["end_frame"] + 1)
            for s in ground_truth(rel)["shots"]]


def _whole(video: VideoInfo) -> list[Scene]:
    return [Scene(0, 0.0, video.duration, 0, max(1, video.num_frames))]


def _scene_at(scenes: list[Scene], t: float) -> int:
    return next(s.index for s in scenes if s.contains(t))


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


# --- windows.py units ---------------------------------------------------------------------

def test_analysis_span_keeps_long_scenes_and_centres_short_ones() -> None:
    assert analysis_span(Scene(0, 4.0, 8.0, 100, 200), 30.0, 3.0) == (4.0, 8.0)
    assert analysis_span(Scene(0, 10.0, 11.0, 0, 1), 30.0, 3.0) == (9.0, 12.0)
    # Clamped by shifting, so the span keeps its full length at either end of the file.
    assert analysis_span(Scene(0, 0.0, 0.5, 0, 1), 30.0, 3.0) == (0.0, 3.0)
    assert analysis_span(Scene(0, 29.8, 30.0, 0, 1), 30.0, 3.0) == (27.0, 30.0)
    assert analysis_span(Scene(0, 0.5, 1.0, 0, 1), 2.0, 3.0) == (0.0, 2.0)  # file too short
    assert analysis_span(Scene(0, 4.0, 4.0, 0, 0), 30.0, 3.0) == (2.5, 5.5)  # empty scene


def test_span_windows_cover_the_span_evenly() -> None:
    fixed = WindowSpec(16_000, 15_600, 7_680, fixed=True, min_span=15_600)
    wins = span_windows(64_000, 128_000, fixed)  # a 4 s span
    assert len(wins) == 8  # ceil((64000 - 15600) / 7680) + 1
    starts = [s for s, _ in wins]
    assert starts[0] == 64_000 and starts[-1] + 15_600 == 128_000
    assert all(0 < b - a <= 7_680 for a, b in itertools.pairwise(starts))
    assert {n for _, n in wins} == {15_600}
    assert span_windows(0, 15_600, fixed) == [(0, 15_600)]
    assert span_windows(0, 8_000, fixed) == [(0, 15_600)]  # fixed input: padded later
    variable = WindowSpec(16_000, 164_080, 82_040, fixed=False, min_span=400)
    assert span_windows(16_000, 64_000, variable) == [(16_000, 48_000)]
    assert span_windows(0, 100, variable) == [(0, 400)]


def test_plan_applies_min_context_and_the_models_floor() -> None:
    spec = WindowSpec(16_000, 15_600, 7_680, fixed=True, min_span=15_600)
    scenes = [Scene(0, 0.0, 10.0, 0, 250), Scene(1, 10.0, 10.4, 250, 260),
              Scene(2, 10.4, 30.0, 260, 750)]
    short = plan(scenes, 30.0, spec, 3.0)[1]
    assert short[0][0] == round(8.7 * 16_000) and short[-1][0] + 15_600 == round(11.7 * 16_000)
    # min_context 0: the scene is still given one full window, centred on it.
    assert plan(scenes, 30.0, spec, 0.0)[1] == [(round(10.2 * 16_000) - 7_800, 15_600)]


def test_pool_surfaces_short_events_and_damps_single_spikes() -> None:
    sustained = np.full((8, 1), 0.9)
    beep = np.array([[0.9], [0.9], [0.9], [0], [0], [0], [0], [0]])
    spike = np.zeros((40, 1))
    spike[7] = 0.3
    for rows, expected in ((sustained, 0.9), (beep, (0.3375 + 0.9) / 2), (spike, 0.15375)):
        got = pool(rows.sum(0), rows.max(0), len(rows))[0]
        assert got == pytest.approx(expected)


def test_top_tags_sorted_limited_and_thresholded() -> None:
    labels = ["a", "b", "c", "d"]
    scores = np.array([0.2, 0.9, 0.05, 0.9])
    assert top_tags(scores, labels, 5, 0.1) == [SoundTag("b", 0.9), SoundTag("d", 0.9),
                                                SoundTag("a", 0.2)]
    assert [t.label for t in top_tags(scores, labels, 1, 0.0)] == ["b"]
    assert top_tags(scores, labels, 0, 0.0) == []


def test_top_tags_skips_labels_that_rename_a_chosen_one() -> None:
    labels = ["Telephone", "Dial tone", "Speech", "Silence"]
    scores = np.array([0.71, 0.70, 0.61, 0.62])
    same = {frozenset((0, 1)): 0.999}
    similar = lambda i, j: same.get(frozenset((i, j)), 0.0)  # noqa: E731
    got = top_tags(scores, labels, 3, 0.1, similar, threshold=0.95)
    assert [t.label for t in got] == ["Telephone", "Silence", "Speech"]
    assert len(top_tags(scores, labels, 3, 0.1, similar, threshold=1.01)) == 3


def test_scene_scores_match_numpy_over_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    rows = rng.random((10, 6))
    rows[:, 5] = 0.5  # a flat label correlates with nothing
    acc = SceneScores(pending=10)
    for part in (rows[:3], rows[3:4], rows[4:]):
        acc.add(part)
    assert acc.pending == 0 and acc.count == 10
    np.testing.assert_allclose(acc.pooled(), (rows.mean(0) + rows.max(0)) / 2)
    got = acc.correlations(range(6))
    np.testing.assert_allclose(got[:5, :5], np.corrcoef(rows[:, :5].T), atol=1e-6)
    assert not got[5].any() and not got[:, 5].any()
    few = SceneScores(pending=3)
    few.add(rows[:3])  # three windows: too few for a correlation to mean anything
    assert not few.correlations(range(5)).any()
    # A long scene: the profile is halved whenever it fills, so memory stays bounded.
    monkeypatch.setattr("scenescribe.sounds.windows.MAX_BINS", 4)
    long = SceneScores(pending=10)
    long.add(rows)
    assert long.bin_size == 4 and len(long.bins) == 2 and long._partial_n == 2
    np.testing.assert_allclose(long.bins[0], rows[:4].mean(0), atol=1e-6)
    np.testing.assert_allclose(long.pooled(), acc.pooled())  # mean and max stay exact


@pytest.mark.parametrize("readers", ["0", "2"])  # in this process; in a child process
def test_read_windows_streams_exact_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            readers: str) -> None:
    monkeypatch.setenv("SCENESCRIBE_AUDIO_READERS", readers)
    rate = 16_000
    ramp = (np.arange(3 * rate) % 20_000 - 10_000) / 16_384  # distinct values, 3 s
    wav = _write_wav(tmp_path / "ramp.wav", ramp)
    windows = [(0, 4_000), (2_000, 4_000), (5_000, 10_000), (30_000, 5_000), (46_000, 4_000)]
    got = list(read_windows(str(wav), windows, rate, block_seconds=0.25))  # 4000-sample blocks
    expected = np.round(ramp * 32767) / 32768
    for (start, n), samples in zip(windows[:4], got, strict=False):
        assert samples.shape == (n,)
        np.testing.assert_allclose(samples, expected[start:start + n], atol=1e-4)
    tail = got[4]  # 2000 samples of audio, then silence past the end of the file
    np.testing.assert_allclose(tail[:2_000], expected[46_000:], atol=1e-4)
    assert not tail[2_000:].any()


class _LoudnessTagger(WindowedTagger):
    """A model-free tagger: ``loud`` scores the window's peak, ``quiet`` its complement."""

    batch_size = 3

    def __init__(self) -> None:
        entry = registry.ModelEntry("loudness", "sounds", "tests:none", "sounds")
        super().__init__(entry, SoundOptions(top_k=2, min_score=0.05), "cpu")
        self.calls: list[int] = []

    @property
    def spec(self) -> WindowSpec:
        return WindowSpec(16_000, 8_000, 4_000, fixed=True, min_span=8_000)

    @property
    def labels(self) -> Sequence[str]:
        return ["loud", "quiet"]

    def score_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        self.calls.append(len(windows))
        peak = np.array([float(np.abs(w).max()) for w in windows])
        return np.stack([peak, 1 - peak], axis=1)


def test_windowed_tagger_pools_per_scene_in_order(tmp_path: Path) -> None:
    rate = 16_000
    audio = np.zeros(12 * rate)
    audio[4 * rate:7 * rate] = 0.8 * np.sin(np.arange(3 * rate) * 0.3)  # loud 4-7 s
    wav = _write_wav(tmp_path / "loud.wav", audio)
    video = probe(wav)
    scenes = [Scene(0, 0.0, 4.0, 0, 1), Scene(1, 4.0, 7.0, 1, 2), Scene(2, 7.0, 7.2, 2, 3),
              Scene(3, 7.2, 11.6, 3, 4), Scene(4, 11.6, 11.8, 4, 5), Scene(5, 11.8, 12.0, 5, 6)]
    tagger = _LoudnessTagger()
    tags = _tag(tagger, video, scenes)
    assert [t.label for t in tags[0]] == ["quiet"]  # silence: loud scores 0, below min_score
    assert tags[1][0].label == "loud" and tags[1][0].score == pytest.approx(0.8, abs=0.01)
    # Scene 2 is 0.2 s long: its 3 s span [5.6, 8.6) reaches back into the loud part.
    assert "loud" in _labels(tags[2])
    assert [t.label for t in tags[3]] == ["quiet"]
    planned = plan(scenes, video.duration, tagger.spec, 3.0)
    assert planned[4] == planned[5]  # both clamped to [9, 12)
    assert sum(tagger.calls) == len({w for ws in planned for w in ws})  # shared ones ran once
    assert sum(tagger.calls) < sum(len(ws) for ws in planned)
    assert max(tagger.calls) == 3


# --- YAMNet, real weights ------------------------------------------------------------------

@pytest.fixture(scope="module")
def yamnet() -> object:
    tagger = registry.create("yamnet", "sounds", options=SoundOptions(), device="cpu")
    tagger.load()
    return tagger


@pytest.fixture(scope="module")
def synthetic_tags(yamnet: object) -> tuple[list[Scene], dict[int, list[SoundTag]]]:
    scenes = _gt_scenes(SYNTHETIC_GT)
    return scenes, _tag(yamnet, probe(media(SYNTHETIC)), scenes)


@pytest.mark.slow
def test_yamnet_hears_speech_where_the_transcript_is(synthetic_tags) -> None:
    scenes, tags = synthetic_tags
    spoken = {s.index for s in scenes for line in ground_truth(SYNTHETIC_GT)["transcript"]
              if line["start_s"] < s.end and s.start < line["end_s"]}
    assert spoken == {0, 2, 4, 5, 6}
    for scene in scenes:
        _well_formed(tags[scene.index], SoundOptions())
        has_speech = bool(_labels(tags[scene.index]) & SPEECH)
        assert has_speech == (scene.index in spoken), (scene.index, tags[scene.index])


@pytest.mark.slow
def test_yamnet_hears_the_beep_noise_and_tone(synthetic_tags) -> None:
    scenes, tags = synthetic_tags
    events = {e["label"]: _scene_at(scenes, (e["start_s"] + e["end_s"]) / 2)
              for e in ground_truth(SYNTHETIC_GT)["sound_events"]}
    assert events == {"beep": 1, "noise_burst": 3, "tone": 5}
    assert "Beep, bleep" in _labels(tags[events["beep"]])
    assert "White noise" in _labels(tags[events["noise_burst"]])
    assert _labels(tags[events["tone"]]) & TONE
    for index, scene_tags in tags.items():  # and nowhere else
        heard = _labels(scene_tags) & (TONE | NOISE)
        assert bool(heard) == (index in events.values()), (index, scene_tags)


@pytest.mark.slow
def test_yamnet_short_scenes_hear_min_context(yamnet: object) -> None:
    video = probe(media(SYNTHETIC))
    # 0.3 s scenes: at the beep, inside the noise burst, 0.6 s after the last word ends
    # (26.425 s), and at the very end of the file (span shifted to [27, 30)).
    scenes = [Scene(0, 5.6, 5.9, 140, 148), Scene(1, 13.7, 14.0, 342, 350),
              Scene(2, 27.0, 27.3, 675, 683), Scene(3, 29.7, 30.0, 742, 750)]
    tags = _tag(yamnet, video, scenes)
    assert "Beep, bleep" in _labels(tags[0])
    assert _labels(tags[1]) & NOISE
    assert "Speech" in _labels(tags[2])  # heard only through the 3 s span [25.65, 28.65)
    assert _labels(tags[3]) == {"Silence"}
    bare = registry.create("yamnet", "sounds", options=SoundOptions(min_context=0.0))
    assert _labels(_tag(bare, video, scenes[2:3])[2]) == {"Silence"}  # one 0.975 s window


@pytest.mark.slow
@pytest.mark.parametrize(("clip", "expected"), [("speech.wav", {"Speech"}),
                                                ("typing.wav", {"Typing", "Computer keyboard"}),
                                                ("music.wav", {"Music"})])
def test_yamnet_real_clips(yamnet: object, clip: str, expected: set[str]) -> None:
    video = probe(MODELS / "audio_tagging" / "test_audio" / clip)
    tags = _tag(yamnet, video, _whole(video))[0]
    _well_formed(tags, SoundOptions())
    assert tags[0].label in expected, tags


# --- AST, real architecture built tiny -----------------------------------------------------

def _audioset_labels() -> list[str]:
    path = MODELS / "audio_tagging" / "efficientat-mn04_as" / "class_labels_indices.csv"
    with path.open(newline="") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = _audioset_labels()
    assert len(labels) == 527
    return make_tiny_ast(tmp_path_factory.mktemp("tiny-ast"), labels)


def _ast(weights: Path, **overrides: object) -> object:
    options = SoundOptions(backend="ast-audioset", weights=str(weights), **overrides)
    return registry.create("ast-audioset", "sounds", options=options, device="cpu")


def test_ast_fbank_matches_the_feature_extractor(tiny_ast: Path) -> None:
    from scenescribe.sounds.ast import Fbank, load_extractor

    extractor = load_extractor(tiny_ast)
    rng = np.random.default_rng(0)
    # Shorter than a window (padded), a 3 s span, and longer than 1024 frames (truncated).
    waves = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (8_000, 48_000, 170_000)]
    expected = extractor(waves, sampling_rate=16_000, return_tensors="np")["input_values"]
    got = Fbank(extractor, "cpu")(waves).numpy()
    assert got.shape == expected.shape == (3, 1024, 128)
    np.testing.assert_allclose(got, expected, atol=5e-4)


def test_ast_tiny_end_to_end_with_window_arithmetic(tiny_ast: Path) -> None:
    options = SoundOptions(backend="ast-audioset", weights=str(tiny_ast), top_k=3, min_score=0.0)
    tagger = _ast(tiny_ast, top_k=3, min_score=0.0)
    tagger.load()
    spec = tagger.spec
    assert spec.sample_rate == 16_000 and spec.window == 1023 * 160 + 400  # 1024 frames
    video = probe(media(SYNTHETIC))
    scenes = [Scene(0, 0.0, 4.0, 0, 100), Scene(1, 4.0, 4.5, 100, 113),
              Scene(2, 4.5, 20.0, 113, 500), Scene(3, 20.0, 29.5, 500, 738),
              Scene(4, 29.5, 30.0, 738, 750)]
    windows = plan(scenes, video.duration, spec, options.min_context)
    assert windows[0] == [(0, 64_000)]  # shorter than 10.25 s: one window, its own length
    assert windows[1] == [(44_000, 48_000)]  # 0.5 s scene: 3 s centred on 4.25 s
    assert windows[4] == [(432_000, 48_000)]  # at the end: shifted to [27, 30)
    assert [s for s, _ in windows[2]] == [72_000, 113_960, 155_920]  # 15.5 s, evenly spread
    seen: list[int] = []
    score = tagger.score_windows

    def recording(batch: Sequence[np.ndarray]) -> np.ndarray:
        seen.extend(len(w) for w in batch)
        return score(batch)

    tagger.score_windows = recording  # type: ignore[method-assign]
    tags = _tag(tagger, video, scenes)
    assert sorted(seen) == sorted(n for ws in windows for _, n in set(ws))
    known = set(_audioset_labels())
    for scene in scenes:
        assert len(tags[scene.index]) == 3
        _well_formed(tags[scene.index], options)
        assert _labels(tags[scene.index]) <= known


def test_ast_tags_two_videos_at_once_as_one_after_the_other(tiny_ast: Path) -> None:
    """``concurrent_videos``: two videos tagged from two threads at once give the tags each
    gives alone."""
    import threading

    tagger = _ast(tiny_ast, top_k=3, min_score=0.0)
    tagger.load()
    assert tagger.concurrent_videos  # type: ignore[attr-defined]
    jobs = {"synthetic": (probe(media(SYNTHETIC)), [Scene(0, 0.0, 4.0, 0, 100),
                                                    Scene(1, 4.0, 20.0, 100, 500)]),
            "bbb": (probe(media("real/big_buck_bunny_0_30.webm")),
                    [Scene(0, 0.0, 12.0, 0, 288), Scene(1, 12.0, 30.0, 288, 720)])}

    def tags(name: str) -> dict[int, list[SoundTag]]:
        video, scenes = jobs[name]
        return _tag(tagger, video, scenes)

    alone = {name: tags(name) for name in jobs}
    together: dict[str, object] = {}
    threads = [threading.Thread(target=lambda n=name: together.__setitem__(n, tags(n)))
               for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone and all(alone.values())


# --- no audio --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["yamnet", "ast-audioset"])
def test_no_audio_gives_empty_tags(backend: str, tiny_ast: Path) -> None:
    video = probe(media("bad_inputs/no_audio.mp4"))
    assert not video.has_audio
    tagger = (_ast(tiny_ast) if backend == "ast-audioset" else
              registry.create("yamnet", "sounds", options=SoundOptions(), device="cpu"))
    scenes = [Scene(0, 0.0, 2.0, 0, 50), Scene(1, 2.0, 5.0, 50, 125)]
    assert _tag(tagger, video, scenes) == {0: [], 1: []}


def test_windows_read_in_a_child_are_the_windows_read_here(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Real AAC audio (resampled from 44.1 kHz): the child's blocks give the very samples of
    the in-process reader; a file without audio gives silence; a broken one fails naming it."""
    windows = [(i * 12_000, 16_000) for i in range(40)] + [(1_000_000, 8_000)]
    got = {}
    for readers in ("0", "2"):
        monkeypatch.setenv("SCENESCRIBE_AUDIO_READERS", readers)
        got[readers] = list(read_windows(str(media("real/big_buck_bunny_0_30.webm")), windows,
                                         16_000, block_seconds=7.0))
    assert len(got["2"]) == len(got["0"]) == len(windows)
    for here, child in zip(got["0"], got["2"], strict=True):
        assert child.dtype == here.dtype and np.array_equal(child, here)
    assert any(w.any() for w in got["2"][:40]) and not got["2"][-1].any()
    with pytest.raises(InputError, match="truncated_no_moov"):
        list(read_windows(str(media("bad_inputs/truncated_no_moov.mp4")), windows, 16_000))
