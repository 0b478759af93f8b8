"""Speech recognition against ground truth: faster-whisper and transformers Whisper with the real
tiny.en weights, a randomly initialised Whisper through the user's loading path, the joins of
words onto scenes, and the cutting and alignment helpers."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import jiwer
import numpy as np
import pytest

from conftest import MODELS, ground_truth, media
from scenescribe import registry
from scenescribe.media import SAMPLE_RATE, decode_audio, probe
from scenescribe.options import SpeechOptions
from scenescribe.progress import NullProgress
from scenescribe.records import Scene, Word
from scenescribe.speech.alignment import dtw_path, group_words
from scenescribe.speech.base import SpeechResult
from scenescribe.speech.chunking import quietest_point, split_at_silences, stream_pieces
from scenescribe.speech.join import assign_words

SYNTHETIC = "synthetic/synthetic_cuts_speech.mp4"
GRID = {"bbaf2n": "bin blue at f two now", "lrwp9a": "lay red with p nine again",
        "sbwe5n": "set blue with e five now", "id2_vcd_swwp2s": "set white with p two soon"}
_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def normalise(text: str) -> str:
    """Lower case, no punctuation, "P2" -> "p two" (GRID's letters and digits are words)."""
    text = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text.lower())
    text = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", text)
    return " ".join(re.sub(r"[^a-z' ]+", " ", text).split())


def wer(reference: str, words: tuple[Word, ...] | list[Word]) -> float:
    return jiwer.wer(normalise(reference), normalise(" ".join(w.text for w in words)) or "<none>")


def gt_scenes() -> list[Scene]:
    """The synthetic clip's ground-truth shots (the .gt.json's end_frame is inclusive)."""
    return [Scene(s["index"], s["start_s"], s["end_s"], s["start_frame"], s["end_frame"] + 1)
            for s in ground_truth("synthetic/synthetic_cuts_speech.gt.json")["shots"]]


def sentences() -> list[dict]:
    return ground_truth("synthetic/synthetic_cuts_speech.gt.json")["transcript"]


def check_well_formed(result: SpeechResult, duration: float) -> None:
    assert isinstance(result, SpeechResult)
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    for w in result.words:
        assert isinstance(w, Word) and w.text.strip()
        assert 0.0 <= w.start <= w.end <= duration + 0.05
        assert 0.0 <= w.probability <= 1.0


def create(name: str, **options: object):
    return registry.create(name, "speech", options=SpeechOptions(**options), device="cpu",
                           model_dir=MODELS)


@pytest.fixture(scope="module")
def fw():
    recognizer = create("faster-whisper-tiny.en")
    recognizer.load()
    yield recognizer
    recognizer.unload()


@pytest.fixture(scope="module")
def fw_results(fw):
    """One transcription per clip, shared by every test that reads it."""
    cache: dict[str, SpeechResult] = {}

    def get(rel: str) -> SpeechResult:
        if rel not in cache:
            cache[rel] = fw.transcribe(probe(media(rel)), NullProgress())
        return cache[rel]

    return get


@pytest.mark.slow
def test_faster_whisper_synthetic_wer_and_language(fw_results) -> None:
    result = fw_results(SYNTHETIC)
    reference = " ".join(s["text"] for s in sentences())
    score = wer(reference, result.words)
    print(f"\nfaster-whisper tiny.en synthetic WER {score:.3f}")
    assert score <= 0.10
    assert result.language == "en" and result.language_probability == pytest.approx(1.0)
    check_well_formed(result, 30.0)


@pytest.mark.slow
def test_sentence_words_land_in_the_scenes_their_span_covers(fw_results) -> None:
    words = fw_results(SYNTHETIC).words
    scenes = gt_scenes()
    transcripts = assign_words(words, scenes)
    assert sum(len(t.words) for t in transcripts.values()) == len(words)
    covered: set[int] = set()
    for sentence in sentences():
        mine = [s.index for s in scenes
                if s.start < sentence["end_s"] and sentence["start_s"] < s.end]
        covered.update(mine)
        heard = [w for i in mine for w in transcripts[i].words]
        assert wer(sentence["text"], heard) <= 0.25, (sentence["text"], heard)
    for index in set(transcripts) - covered:  # scenes 1 and 3 hold no speech
        assert transcripts[index].text == "" and transcripts[index].words == ()


@pytest.mark.slow
@pytest.mark.parametrize("rel", ["real/big_buck_bunny_0_30.webm", "bad_inputs/silent_audio.mp4",
                                 "bad_inputs/no_audio.mp4"])
def test_no_words_from_music_silence_or_no_audio(fw_results, rel: str) -> None:
    result = fw_results(rel)
    assert result.words == () and result.language is None


@pytest.mark.slow
def test_grid_wer(fw_results, record_property) -> None:
    scores, errors, total = {}, 0.0, 0
    for stem, sentence in GRID.items():
        result = fw_results(f"real/grid/{stem}.mpg")
        scores[stem] = wer(sentence, result.words)
        errors += scores[stem] * len(sentence.split())
        total += len(sentence.split())
    print(f"\nfaster-whisper tiny.en GRID WER {scores}, pooled {errors / total:.3f}")
    record_property("grid_wer", scores)
    assert max(scores.values()) <= 0.5  # tiny.en hears "bin blue at" as "Bimbloo"
    assert errors / total <= 0.2


@pytest.mark.slow
def test_grid_word_times_match_the_alignment(fw_results) -> None:
    align = [line.split() for line in media("real/grid/swwp2s.align").read_text().splitlines()]
    truth = {w: (int(a) + int(b)) / 2 / 25000 for a, b, w in align if w != "sil"}
    matched = 0
    for word in fw_results("real/grid/id2_vcd_swwp2s.mpg").words:
        name = normalise(word.text)
        if name in truth:
            matched += 1
            assert abs(word.midpoint - truth[name]) < 0.25, (name, word, truth[name])
    assert matched >= 4  # set, white, with, soon ("P2" is two GRID words)


@pytest.mark.slow
def test_long_file_pieces_keep_words_on_the_video_clock(fw) -> None:
    """15 s pieces instead of 10 minutes: cuts fall in pauses, times stay on the video clock."""
    small = create("faster-whisper-tiny.en")
    small.model, small.block_seconds = fw.model, 15.0
    result = small.transcribe(probe(media(SYNTHETIC)), NullProgress())
    assert result.extra["pieces"] == 2
    spans = [(s["start_s"] - 0.7, s["end_s"] + 0.7) for s in sentences()]
    for w in result.words:
        assert any(a <= w.midpoint <= b for a, b in spans), w
    assert wer(" ".join(s["text"] for s in sentences()), result.words) <= 0.3


@pytest.mark.slow
def test_sequential_decoder_agrees_with_the_batched_one(fw, fw_results) -> None:
    sequential = create("faster-whisper-tiny.en", batch_size=1)
    sequential.model = fw.model
    assert not sequential.batched and fw.batched
    one = sequential.transcribe(probe(media(SYNTHETIC)), NullProgress()).words
    batched = fw_results(SYNTHETIC).words
    assert [w.text for w in one] == [w.text for w in batched]
    assert np.allclose([w.start for w in one], [w.start for w in batched], atol=0.1)


# transformers Whisper


@pytest.mark.slow
def test_transformers_tiny_en_on_the_synthetic_clip() -> None:
    recognizer = create("whisper-tiny.en")
    result = recognizer.transcribe(probe(media(SYNTHETIC)), NullProgress())
    score = wer(" ".join(s["text"] for s in sentences()), result.words)
    print(f"\ntransformers tiny.en synthetic WER {score:.3f}")
    assert score <= 0.10 and result.language == "en"
    check_well_formed(result, 30.0)
    for sentence in sentences():  # word times within 0.7 s of the spoken span
        inside = [w for w in result.words
                  if sentence["start_s"] - 0.7 <= w.start and w.end <= sentence["end_s"] + 0.7]
        assert wer(sentence["text"], inside) <= 0.25
    recognizer.unload()


def _save_random_whisper(folder: Path, multilingual: bool) -> None:
    """The real architecture, tiny and random, with the real tiny.en tokenizer and features.

    The multilingual variant adds language and task tokens to the tokenizer, so language
    detection and the language-and-task prompt (large-v3's path) run too.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    real = MODELS / "whisper/hf-whisper-tiny.en"
    processor = WhisperProcessor.from_pretrained(real)
    generation = GenerationConfig.from_pretrained(real)
    generation.alignment_heads = [[1, 0], [1, 1]]
    if multilingual:
        names = ["<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>"]
        processor.tokenizer.add_tokens(names, special_tokens=True)
        ids = processor.tokenizer.convert_tokens_to_ids(names)
        generation.is_multilingual = True
        generation.lang_to_id = {"<|en|>": ids[0], "<|de|>": ids[1]}
        generation.task_to_id = {"translate": ids[2], "transcribe": ids[3]}
    config = WhisperConfig(vocab_size=len(processor.tokenizer), num_mel_bins=80, d_model=32,
                           encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           max_source_positions=1500, max_target_positions=448,
                           pad_token_id=50256, bos_token_id=50257, eos_token_id=50256,
                           decoder_start_token_id=50257)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = generation
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.mark.slow
@pytest.mark.parametrize("multilingual", [False, True])
def test_random_weight_whisper_loads_through_the_registry_and_runs(
        tmp_path: Path, multilingual: bool) -> None:
    _save_random_whisper(tmp_path, multilingual)
    recognizer = create("whisper-tiny.en", weights=str(tmp_path), batch_size=2)
    recognizer.max_new_tokens = 12  # random weights never stop on their own
    assert recognizer.weights() == tmp_path
    info = probe(media(SYNTHETIC))
    result = recognizer.transcribe(info, NullProgress())
    check_well_formed(result, info.duration)  # random text is usually dropped by the guard
    assert recognizer.multilingual == multilingual
    # Below the guard: every chunk decodes, and its words are timed inside the chunk.
    audio = decode_audio(media(SYNTHETIC))
    batch = [(5.0, audio[5 * SAMPLE_RATE: 15 * SAMPLE_RATE]), (20.0, audio[20 * SAMPLE_RATE:])]
    decoded = recognizer.decode(batch)
    assert len(decoded) == 2 and any(d.words for d in decoded)
    for (offset, samples), d in zip(batch, decoded, strict=True):
        assert 0.0 <= d.no_speech_prob <= 1.0 and d.avg_logprob <= 0.0
        assert d.language in ({"en", "de"} if multilingual else {"en"})
        assert 0.0 < d.language_probability <= 1.0
        for w in d.words:
            assert offset <= w.start <= w.end <= offset + len(samples) / SAMPLE_RATE
    recognizer.unload()


@pytest.mark.slow
def test_alignment_head_weights_equal_the_models_own_cross_attention() -> None:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from scenescribe.speech.alignment_heads import AttentionCapture

    config = WhisperConfig(vocab_size=100, num_mel_bins=80, d_model=32, encoder_layers=1,
                           decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
                           max_target_positions=64, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.set_attn_implementation("eager")
    encoded = torch.randn(2, 1500, 32)
    ids = torch.randint(3, 100, (2, 7))
    heads = {1: [0, 3], 2: [2]}
    with torch.inference_mode(), AttentionCapture(model, heads, encoded) as capture:
        out = model(encoder_outputs=(encoded,), decoder_input_ids=ids, output_attentions=True,
                    use_cache=False)
        mine = capture.weights([0, 1], range(2, 7), 1500)
        second = capture.weights([1], range(3, 5), 1500)  # a sample alone, some rows
    for b in range(2):
        theirs = torch.cat([out.cross_attentions[layer][b, hs] for layer, hs in heads.items()])
        np.testing.assert_allclose(mine[b].numpy(), theirs[:, 2:7].numpy(), rtol=1e-4,
                                   atol=1e-6)
    np.testing.assert_allclose(second[0].numpy(), mine[1, :, 1:3].numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("piece_cells", [1 << 27, 1])  # 1: every chunk a piece of its own
def test_chunks_together_give_each_chunks_own_alignment_matrix(
        monkeypatch: pytest.MonkeyPatch, piece_cells: int) -> None:
    """Chunks of differing token and frame counts, batched with their rows and frames masked,
    give what each chunk alone gives (and openai-whisper's treatment alone), however the
    weights are split into pieces (a chunk too short to filter too)."""
    import torch

    from scenescribe.speech import alignment_heads

    monkeypatch.setattr(alignment_heads, "PIECE_CELLS", piece_cells)
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from scenescribe.speech.alignment_heads import AttentionCapture, alignment_matrix

    config = WhisperConfig(vocab_size=100, num_mel_bins=80, d_model=32, encoder_layers=1,
                           decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
                           max_target_positions=64, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    encoded = torch.randn(7, 1500, 32)
    ids = torch.randint(3, 100, (7, 12))
    heads = {0: [1], 1: [0, 2]}
    spans = [range(2, 12), range(2, 5), range(2, 9), range(2, 12), range(2, 6), range(2, 8),
             range(2, 4)]
    # Chunks end at a quiet point: frame counts differ (and one is too short to filter).
    frames = [1500, 1500, 640, 1500, 1187, 4, 3]
    with torch.inference_mode(), AttentionCapture(model, heads, encoded) as capture:
        model(encoder_outputs=(encoded,), decoder_input_ids=ids, use_cache=False)
        together = capture.matrices(list(range(7)), spans, frames)
        alone = [alignment_matrix(capture.weights([b], spans[b], frames[b])[0]).numpy()
                 for b in range(7)]
        picked = capture.matrices([1, 3], [spans[1], spans[3]], [1500, 1500])
    for b in range(7):
        assert together[b].shape == (len(spans[b]), frames[b])
        # float32 sums in another order, and medians of near ties: a padding row that leaked
        # into the z-scores moves values by about 1
        np.testing.assert_allclose(together[b], alone[b], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(picked[0], alone[1], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(picked[1], alone[3], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("width", [3, 5, 7, 9])
def test_the_median_network_is_the_median(width: int) -> None:
    """``sliding_median`` (CUDA's filter) against torch's median: every 0/1 window (the 0-1
    principle: a compare-exchange network that selects right on those does on any input), then
    random values with ties."""
    import itertools

    import torch

    from scenescribe.speech.alignment_heads import sliding_median

    windows = torch.tensor(list(itertools.product([0.0, 1.0], repeat=width)))
    assert torch.equal(sliding_median(windows, width)[:, 0], windows.median(dim=-1).values)
    x = torch.randint(0, 4, (3, 5, 60)).float()
    assert torch.equal(sliding_median(x, width), x.unfold(-1, width, 1).median(dim=-1).values)


def test_alignment_matrix_is_openai_whispers_normalise_filter_average() -> None:
    import torch

    from scenescribe.speech.alignment_heads import alignment_matrix

    w = np.random.default_rng(1).random((3, 5, 40)).astype(np.float32)
    z = (w - w.mean(axis=1, keepdims=True)) / (w.std(axis=1, keepdims=True) + 1e-8)
    padded = np.pad(z, [(0, 0), (0, 0), (3, 3)], mode="reflect")
    expected = np.median(np.lib.stride_tricks.sliding_window_view(padded, 7, axis=-1), axis=-1)
    got = alignment_matrix(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, expected.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_compute_types_follow_the_device() -> None:
    from scenescribe.errors import ConfigError
    from scenescribe.speech.faster_whisper import compute_type_for, split_device
    from scenescribe.speech.hf_whisper import dtype_name_for

    assert compute_type_for("default", "cpu") == "float32"  # int8 garbles tiny.en
    assert compute_type_for("default", "cuda") == "float16"
    assert compute_type_for("int8", "cpu") == "int8"
    assert split_device("cuda:1") == ("cuda", 1) and split_device("cpu") == ("cpu", 0)
    assert dtype_name_for("default", "cuda:0") == "float16"
    assert dtype_name_for("default", "cpu") == "float32"
    with pytest.raises(ConfigError, match="int8.*not supported by transformers"):
        dtype_name_for("int8", "cpu")


# Helpers: cutting audio, DTW, word grouping


def test_quiet_cut_lands_in_the_pause() -> None:
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.5, 0.5, 20 * SAMPLE_RATE).astype(np.float32)
    audio[int(13.0 * SAMPLE_RATE): int(13.6 * SAMPLE_RATE)] = 0.0
    cut = quietest_point(audio, 10 * SAMPLE_RATE, 20 * SAMPLE_RATE)
    assert 13.0 <= cut / SAMPLE_RATE <= 13.6
    ranges = split_at_silences(audio, 15 * SAMPLE_RATE, 5 * SAMPLE_RATE)
    assert ranges[0] == (0, cut) and ranges[-1][1] == len(audio)


def test_pieces_tile_the_file_on_its_clock() -> None:
    audio = decode_audio(media(SYNTHETIC))
    pieces = list(stream_pieces(media(SYNTHETIC), block_seconds=7.0))
    assert len(pieces) > 3
    position = 0
    for start, samples in pieces:
        assert start == pytest.approx(position / SAMPLE_RATE, abs=1e-6)
        np.testing.assert_array_equal(samples, audio[position: position + len(samples)])
        position += len(samples)
    assert position == len(audio)


def _dtw_reference(cost: np.ndarray) -> list[tuple[int, int]]:
    """openai-whisper's dtw_cpu, loop for loop."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    trace = -np.ones((n + 1, m + 1))
    acc[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            c, t = (c0, 0) if c0 < c1 and c0 < c2 else (c1, 1) if c1 < c0 and c1 < c2 else (c2, 2)
            acc[i, j], trace[i, j] = cost[i - 1, j - 1] + c, t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        i, j = (i - 1, j - 1) if trace[i, j] == 0 else (i - 1, j) if trace[i, j] == 1 else (i, j - 1)
    return path[::-1]


@pytest.mark.parametrize("shape", [(1, 5), (4, 4), (6, 40), (12, 90)])
def test_vectorised_dtw_matches_the_reference(shape: tuple[int, int]) -> None:
    cost = np.random.default_rng(sum(shape)).normal(size=shape)
    rows, cols = dtw_path(cost)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == _dtw_reference(cost)


def test_tokens_group_into_words_with_punctuation_attached() -> None:
    pieces = {1: " Hello", 2: ",", 3: " it", 4: "'s", 5: " a", 6: " te", 7: "st", 8: "."}
    words = group_words(list(pieces), lambda ids: "".join(pieces[i] for i in ids), "en")
    assert [w for w, _ in words] == [" Hello,", " it's", " a", " test."]
    assert [ix for _, ix in words] == [[0, 1], [2, 3], [4], [5, 6, 7]]


# Joining words onto scenes


def _scenes(*bounds: float) -> list[Scene]:
    return [Scene(i, a, b, int(a * 25), int(b * 25))
            for i, (a, b) in enumerate(itertools.pairwise(bounds))]


def test_words_go_to_the_scene_holding_their_midpoint() -> None:
    scenes = _scenes(0.0, 2.0, 5.0, 9.0)
    words = [Word(0.1, 0.5, " a"), Word(1.8, 2.6, " b"), Word(1.5, 2.5, " c"),
             Word(3.0, 6.0, " d"), Word(8.5, 9.0, " e")]
    out = assign_words(words, scenes)
    assert [w.text for w in out[0].words] == [" a"]
    assert [w.text for w in out[1].words] == [" c", " b", " d"]  # midpoint 2.0 starts scene 1
    assert out[2].text == "e" and len(out) == 3


def test_every_scene_gets_a_transcript_and_stray_words_are_left_out() -> None:
    scenes = [s for s in _scenes(0.0, 1.0, 2.0, 3.0) if s.index != 1][::-1]  # a gap, unsorted
    out = assign_words([Word(1.2, 1.4, " gap"), Word(3.5, 3.9, " after")], scenes)
    assert set(out) == {0, 2} and all(t.words == () and t.text == "" for t in out.values())
    assert assign_words([], []) == {}
