"""Whisper's static decoder (``speech.static_decode``) against transformers' ``generate``.

The real tiny.en on real speech: the same transcripts and word times through the recognizer's
own API, per batch and pooled over videos. A random multilingual model checks the
language-and-task prompt, the token limit and the padded batch layout that CUDA graphs use
(here without graphs: this machine has no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import media
from scenescribe import registry
from scenescribe.media import SAMPLE_RATE, decode_audio, probe
from scenescribe.options import SpeechOptions
from scenescribe.progress import NullProgress

SYNTHETIC = "synthetic/synthetic_cuts_speech.mp4"
GRID = ["real/grid/bbaf2n.mpg", "real/grid/lrwp9a.mpg", "real/grid/sbwe5n.mpg",
        "real/grid/id2_vcd_swwp2s.mpg"]
pytestmark = pytest.mark.slow


def _recognizer(weights: str | None = None, batch_size: int = 8):
    return registry.create("whisper-tiny.en", "speech",
                           options=SpeechOptions(batch_size=batch_size, weights=weights),
                           device="cpu", model_dir=registry.model_dir_from_env())


def _same(old, new) -> None:
    """Identical text and scores; every word within 0.02 s."""
    assert new.text == old.text
    assert new.avg_logprob == pytest.approx(old.avg_logprob, abs=1e-4)
    assert new.no_speech_prob == pytest.approx(old.no_speech_prob, abs=1e-4)
    assert new.truncated == old.truncated
    assert [w.text for w in new.words] == [w.text for w in old.words]
    for a, b in zip(old.words, new.words, strict=True):
        assert abs(a.start - b.start) <= 0.02 and abs(a.end - b.end) <= 0.02


@pytest.fixture(scope="module")
def tiny():
    recognizer = _recognizer()
    recognizer.load()
    yield recognizer
    recognizer.unload()


def test_real_speech_decodes_as_generate_did(tiny) -> None:
    synthetic = decode_audio(media(SYNTHETIC))
    batch = [(0.0, synthetic[: 30 * SAMPLE_RATE]), (12.5, synthetic[12 * SAMPLE_RATE:])]
    batch += [(3.0 * k, decode_audio(media(g))) for k, g in enumerate(GRID)]
    tiny.decoder = "generate"
    old = tiny.decode(batch)
    tiny.decoder = "static"
    new = tiny.decode(batch)
    assert sum(len(d.words) for d in old) > 40  # real speech in every chunk
    for o, n in zip(old, new, strict=True):
        _same(o, n)
    assert "set white with p2 soon" in new[-1].text.lower().replace(".", "")


def test_pooled_videos_give_the_same_words_and_times(tiny) -> None:
    videos = [probe(media(c)) for c in [SYNTHETIC, *GRID[:2]]]
    results = {}
    for mode in ("generate", "static"):
        tiny.decoder = mode
        got = dict(tiny.transcribe_many([(v, NullProgress()) for v in videos]))
        results[mode] = [got[i] for i in range(len(videos))]
    for old, new in zip(results["generate"], results["static"], strict=True):
        assert [w.text for w in new.words] == [w.text for w in old.words] and old.words
        for a, b in zip(old.words, new.words, strict=True):
            assert abs(a.start - b.start) <= 0.02 and abs(a.end - b.end) <= 0.02


def test_padded_rows_and_reused_buffers_change_nothing(tiny) -> None:
    """The graph layout (batches padded to buckets of 8, buffers kept for smaller batches)."""
    synthetic = decode_audio(media(SYNTHETIC))
    batch = [(0.0, synthetic[: 30 * SAMPLE_RATE]), (0.0, decode_audio(media(GRID[0])))]
    tiny.decoder = "static"
    plain = tiny.decode(batch)
    static = tiny._static()
    static.pad = True
    try:
        padded = tiny.decode(batch)
        assert static._buffers.rows == 8
        smaller = tiny.decode(batch[1:])  # a view of the same buffers
        assert static._buffers.rows == 8
    finally:
        static.pad = False
    for o, n in zip(plain, padded, strict=True):
        _same(o, n)
    _same(plain[1], smaller[0])


@pytest.mark.parametrize("multilingual", [False, True])
def test_random_model_prompt_and_token_limit_as_generate(tmp_path: Path,
                                                         multilingual: bool) -> None:
    from test_speech import _save_random_whisper

    _save_random_whisper(tmp_path, multilingual)
    recognizer = _recognizer(str(tmp_path), batch_size=3)
    recognizer.max_new_tokens = 12  # random weights never stop on their own
    audio = decode_audio(media(SYNTHETIC))
    batch = [(0.0, audio[: 10 * SAMPLE_RATE]), (10.0, audio[10 * SAMPLE_RATE: 25 * SAMPLE_RATE]),
             (25.0, audio[25 * SAMPLE_RATE:])]
    out = {}
    for mode in ("generate", "static"):
        recognizer.decoder = mode
        out[mode] = recognizer.decode(batch)
    for o, n in zip(out["generate"], out["static"], strict=True):
        # The static decoder detects the language in its first step, transformers in a pass
        # of its own.
        assert n.language == o.language
        assert n.language_probability == pytest.approx(o.language_probability, abs=1e-4)
        _same(o, n)
    assert any(d.truncated for d in out["static"])  # the limit was reached, as in generate
    recognizer.unload()


def test_the_batched_dtw_finds_numpys_path() -> None:
    """The batched DTW (every chunk of a batch at once) gives numpy's frames, matrix by
    matrix, from float32 matrices as the backend's alignment heads give them."""
    import numpy as np

    from scenescribe.speech import dtw_child
    from scenescribe.speech.alignment import token_frames, token_frames_batch

    rng = np.random.default_rng(3)
    shapes = [(30, 400), (5, 3), (1, 50), (12, 12), (60, 1500)]  # (5, 3): no path
    matrices = [rng.normal(size=s).astype(np.float32) for s in shapes]
    expected = [token_frames(m).tolist() for m in matrices]
    assert [f.tolist() for f in token_frames_batch(matrices)] == expected
    # Large batches are warped in a child process: the same frames come back.
    big = [*matrices, *(rng.normal(size=(200, 1500)).astype(np.float32) for _ in range(4))]
    assert sum(m.size for m in big) >= dtw_child.CHILD_CELLS
    got = dtw_child.token_frames_apart(big)
    assert [f.tolist() for f in got[:5]] == expected
    assert [f.tolist() for f in got[5:]] == [token_frames(m).tolist() for m in big[5:]]


def test_the_decoder_is_a_validated_speech_option() -> None:
    from scenescribe.errors import OptionError

    assert _recognizer().decoder == "static"  # "auto" on a CPU
    on_gpu = registry.create("whisper-tiny.en", "speech", options=SpeechOptions(),
                             device="cuda", model_dir=registry.model_dir_from_env())
    assert on_gpu.decoder == "graph"  # "auto" on CUDA (nothing is loaded to ask it)
    chosen = registry.create("whisper-tiny.en", "speech", options=SpeechOptions(decoder="generate"),
                             device="cpu", model_dir=registry.model_dir_from_env())
    assert chosen.decoder == "generate" and chosen.facts()["decoder"] == "generate"
    assert chosen.cache_key()["options"]["decoder"] == "generate"  # part of the identity
    with pytest.raises(OptionError, match="decoder"):
        SpeechOptions(decoder="fast")


def test_a_failing_dtw_child_is_reported_once_and_the_batch_warped_here(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    from scenescribe.speech import dtw_child
    from scenescribe.speech.alignment import token_frames

    monkeypatch.setattr(dtw_child, "_failed", [])
    monkeypatch.setattr(dtw_child, "MODULE", "scenescribe.no_such_module")
    rng = np.random.default_rng(5)
    big = [rng.normal(size=(120, 1500)).astype(np.float32) for _ in range(6)]
    with caplog.at_level("WARNING", logger="scenescribe.speech"):
        first = dtw_child.token_frames_apart(big)
        second = dtw_child.token_frames_apart(big[:3] * 2)
    assert [f.tolist() for f in first] == [token_frames(m).tolist() for m in big]
    assert len(second) == 6
    warnings = [r.getMessage() for r in caplog.records if "child process failed" in r.getMessage()]
    assert len(warnings) == 1 and "no_such_module" in warnings[0]


@pytest.mark.parametrize("max_new_tokens", [224, 5])  # 5: every row cut at the token limit
def test_what_the_steps_keep_equals_a_teacher_forced_pass(tiny, max_new_tokens: int) -> None:
    """The static decoder's kept log-probabilities and alignment-head weights are the
    teacher-forced pass's over the same tokens (``token_scores``), rows cut at the limit
    included: real speech, the real tiny.en."""
    import numpy as np
    import torch

    from scenescribe.speech.token_scores import decoded_scores, forced_scores, watched_tokens
    from scenescribe.speech.whisper_parts import text_tokens

    batch = [decode_audio(media(g)) for g in GRID[:3]]
    model = tiny.model.net
    config = model.generation_config
    eot = config.eos_token_id
    prompt = tiny._langs.prompt("en")
    with torch.inference_mode():
        features = tiny.model.processor.feature_extractor(
            batch, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        encoded = model.model.encoder(features).last_hidden_state
        mask = tiny._suppress_mask(len(prompt))
        decoding = tiny._static().generate(encoded, [prompt] * 3, max_new_tokens, mask.always,
                                           mask.first, eot)
        texts = [text_tokens(t, eot) for t in decoding.tokens]
        assert all(texts) and all((len(t) == 5) == (max_new_tokens == 5) for t in texts)
        rows = [range(len(prompt) - 1, len(prompt) + len(t)) for t in texts]
        kept = decoded_scores(decoding, rows)
        forced = forced_scores(model, tiny.alignment_heads(), encoded,
                               [prompt + t + [eot] for t in texts], rows,
                               watched_tokens(config)[1], eot)
        frames = [len(a) // 320 for a in batch]
        ours = kept.attention.matrices([0, 1, 2], rows, frames)
        theirs = forced.attention.matrices([0, 1, 2], rows, frames)
    np.testing.assert_allclose(kept.no_speech, forced.no_speech, atol=1e-5)
    for b in range(3):
        assert ours[b].shape == (len(rows[b]), frames[b])
        np.testing.assert_allclose(kept.next_lp[b], forced.next_lp[b], atol=2e-4)
        np.testing.assert_allclose(ours[b], theirs[b], atol=2e-3)


def test_log_mel_is_the_feature_extractors(tiny) -> None:
    """``LogMel`` gives the extractor's features (padded, cut at 30 s, short chunks), and its
    reused buffer holds nothing of an earlier, larger batch."""
    import numpy as np
    import torch

    from scenescribe.speech.log_mel import LogMel

    extractor = tiny.model.processor.feature_extractor
    synthetic = decode_audio(media(SYNTHETIC))
    chunks = [synthetic[: 30 * SAMPLE_RATE], decode_audio(media(GRID[0])),
              synthetic[: 35 * SAMPLE_RATE], synthetic[:800]]
    mel = LogMel(extractor, "cpu")
    for batch in (chunks, chunks[1:2]):
        theirs = extractor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        ours = mel(batch, torch.float32)
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-5, rtol=0)
