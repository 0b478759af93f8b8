"""Real spoken sentences in a row: montages of the four GRID clips, built at test time, must
transcribe with every sentence in its place (none dropped, none written twice), and the shared
speech guard keeps real repetitive speech while it drops loops and stock phrases.

The montage helpers have no pytest dependency: ``benchmarks/bench_speech.py`` imports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import pytest

from conftest import MEDIA, MODELS
from scenescribe import registry
from scenescribe.media import probe
from scenescribe.options import SpeechOptions
from scenescribe.progress import NullProgress
from scenescribe.speech.guard import LanguageVote, SpeechGuard, compression_ratio

GRID_DIR = MEDIA / "real" / "grid"
CLIPS = ("bbaf2n", "lrwp9a", "sbwe5n", "id2_vcd_swwp2s")
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_GRAMMAR = (  # GRID: command colour preposition letter digit adverb, one character each
    {"b": "bin", "l": "lay", "p": "place", "s": "set"},
    {"b": "blue", "g": "green", "r": "red", "w": "white"},
    {"a": "at", "b": "by", "i": "in", "w": "with"},
)
_ADVERBS = {"a": "again", "n": "now", "p": "please", "s": "soon"}


def grid_sentence(stem: str) -> str:
    """``bbaf2n`` -> "bin blue at f two now" (a prefix such as ``id2_vcd_`` is ignored)."""
    code = stem.rsplit("_", 1)[-1]
    if not re.fullmatch(r"[blps][bgrw][abiw][a-z][0-9z][anps]", code):
        raise ValueError(f"{stem}: not a GRID sentence code")
    words = [table[c] for table, c in zip(_GRAMMAR, code, strict=False)]
    digit = _DIGITS[0] if code[4] == "z" else _DIGITS[int(code[4])]
    return " ".join([*words, code[3], digit, _ADVERBS[code[5]]])


def normalise(text: str) -> str:
    """Lower case, no punctuation, "P2" -> "p two" (GRID's letters and digits are words)."""
    text = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text.lower())
    text = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", text)
    return " ".join(re.sub(r"[^a-z' ]+", " ", text).split())


@dataclass(frozen=True, slots=True)
class Montage:
    """Audio made of GRID clips and gaps; ``slots`` give each clip's span and sentence."""

    audio: np.ndarray
    slots: tuple[tuple[float, float, str], ...]

    @property
    def reference(self) -> str:
        return " ".join(sentence for _, _, sentence in self.slots)


# Several orders and repeats, about 30 s each: in a row with pauses, each sentence twice in a
# row with no pause (the clips' own 0.5 s of silence around the speech remains), and a third
# order with longer pauses.
MONTAGES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "orders": (("bbaf2n", "lrwp9a", "sbwe5n", "id2_vcd_swwp2s",
                "lrwp9a", "id2_vcd_swwp2s", "bbaf2n", "sbwe5n"), (0.75,)),
    "repeats": (("bbaf2n", "bbaf2n", "lrwp9a", "lrwp9a", "sbwe5n", "sbwe5n",
                 "id2_vcd_swwp2s", "id2_vcd_swwp2s", "bbaf2n", "bbaf2n"), (0.0,)),
    "pauses": (("id2_vcd_swwp2s", "lrwp9a", "id2_vcd_swwp2s", "sbwe5n", "bbaf2n", "sbwe5n",
                "bbaf2n", "lrwp9a"), (0.9, 0.4, 1.1, 0.6, 0.2, 1.2, 0.8, 0.0)),
}


def build_montage(name: str, sample_rate: int = 16_000) -> Montage:
    """The named montage of ``MONTAGES``."""
    order, gaps = MONTAGES[name]
    return montage_from(order, gaps, sample_rate)


def montage_from(order: tuple[str, ...] | list[str], gaps: tuple[float, ...] | list[float],
                 sample_rate: int = 16_000) -> Montage:
    """GRID clips in ``order`` from their decoded audio, each followed by a pause of silence
    (``gaps`` in seconds, cycled)."""
    from scenescribe.media import decode_audio

    clips = {stem: decode_audio(GRID_DIR / f"{stem}.mpg", sample_rate) for stem in set(order)}
    parts: list[np.ndarray] = []
    slots = []
    position = 0
    for i, stem in enumerate(order):
        gap = np.zeros(round(gaps[i % len(gaps)] * sample_rate), np.float32)
        slots.append((position / sample_rate, (position + len(clips[stem])) / sample_rate,
                      grid_sentence(stem)))
        parts += [clips[stem], gap]
        position += len(clips[stem]) + len(gap)
    return Montage(np.concatenate(parts), tuple(slots))


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = 16_000) -> Path:
    """Float32 WAV (no clipping: GRID's decoded MP2 peaks at 1.5), read back bit-exact."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_f32le", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def slot_texts(montage: Montage, words: tuple | list, margin: float = 0.3) -> list[str]:
    """The words heard in each slot (by word midpoint), and last the words in none."""
    texts: list[list[str]] = [[] for _ in range(len(montage.slots) + 1)]
    for word in words:
        middle = (word.start + word.end) / 2
        inside = [i for i, (a, b, _) in enumerate(montage.slots)
                  if a - margin <= middle < b + margin]
        # Slots with no gap between them overlap by the margin: take the nearer centre.
        best = min(inside, key=lambda i: abs(middle - sum(montage.slots[i][:2]) / 2),
                   default=len(montage.slots))
        texts[best].append(word.text)
    return [normalise(" ".join(t)) for t in texts]


# Tests


@pytest.fixture(scope="module")
def tiny_en():
    recognizer = registry.create("faster-whisper-tiny.en", "speech", options=SpeechOptions(),
                                 device="cpu", model_dir=MODELS)
    recognizer.load()
    yield recognizer
    recognizer.unload()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "batch_size"),
                         [*((name, 8) for name in MONTAGES), ("repeats", 1)])
def test_montage_keeps_every_sentence_in_its_place(tiny_en, tmp_path: Path, name: str,
                                                   batch_size: int) -> None:
    """The CPU default (batched, VAD; and the sequential decoder) on about 30 s of real
    sentences: each sentence is heard where it was said, none is dropped, written twice or
    heard in a pause."""
    recognizer = registry.create("faster-whisper-tiny.en", "speech", device="cpu",
                                 options=SpeechOptions(batch_size=batch_size), model_dir=MODELS)
    recognizer.model = tiny_en.model
    montage = build_montage(name)
    assert 28.0 <= len(montage.audio) / 16_000 <= 31.0
    path = write_wav(tmp_path / f"{name}.wav", montage.audio)
    result = recognizer.transcribe(probe(path), NullProgress())
    texts = slot_texts(montage, result.words)
    heard = normalise(" ".join(w.text for w in result.words))
    score = jiwer.wer(normalise(montage.reference), heard or "<none>")
    print(f"\n{name}: WER {score:.3f}\n  ref {montage.reference}\n  hyp {heard}")
    assert texts[-1] == "", f"words heard in no sentence: {texts[-1]!r}"
    for (start, end, sentence), text in zip(montage.slots, texts, strict=False):
        # tiny.en hears "bin blue at" as "Bimblu": 3 errors in 6 words, at most.
        assert jiwer.wer(sentence, text or "<none>") <= 0.5, (start, end, sentence, text)
    assert score <= 0.25


def test_grid_sentences_read_from_file_names() -> None:
    assert grid_sentence("bbaf2n") == "bin blue at f two now"
    assert grid_sentence("id2_vcd_swwp2s") == "set white with p two soon"
    assert grid_sentence("lrwp9a") == "lay red with p nine again"
    with pytest.raises(ValueError, match="not a GRID"):
        grid_sentence("hello")


def test_guard_judges_a_sentence_not_its_window() -> None:
    guard = SpeechGuard()
    # One batched window of a montage as tiny.en decoded it (seen at compression ratio 2.78).
    window = " ".join(["Lay red with P9 again."] * 2 + ["Set blue with E5 now."] * 3
                      + ["Bim blue F2 now."] + ["Lay red with P9 again."] * 2)
    # A 30 s window of real GRID speech compresses like a loop (this dropped whole windows) ...
    assert compression_ratio(window) > 2.4
    # ... its segments do not, and are kept with the window's scores.
    for sentence in ("Bimblu F2 now. Bimblu F2 now.", "Set white with P2 soon."):
        assert guard.reason(sentence, -0.3, 0.3) is None
    # A runaway loop within one segment is still dropped.
    assert guard.reason(" Thank you." * 40, -0.3, 0.1) == "repetition loop"
    assert guard.reason(" the" * 60, -0.2, 0.1) == "repetition loop"
    # A whole untimestamped window repeats for real unless the decoder ran out of tokens.
    assert guard.reason(window, -0.1, 0.05, truncated=False) is None
    assert guard.reason(window, -0.1, 0.05, truncated=True) == "repetition loop"


@pytest.mark.slow
def test_transformers_whisper_keeps_a_window_of_repeated_sentences() -> None:
    """The GPU path judges a whole chunk: real repeats must survive its guard."""
    recognizer = registry.create("whisper-tiny.en", "speech", options=SpeechOptions(),
                                 device="cpu", model_dir=MODELS)
    montage = build_montage("repeats")
    (decoded,) = recognizer.decode([(0.0, montage.audio)])
    assert compression_ratio(decoded.text) > 2.3 and not decoded.truncated
    assert decoded.keep(), decoded.text
    texts = slot_texts(montage, decoded.words)
    for (_, _, sentence), text in zip(montage.slots, texts, strict=False):
        assert jiwer.wer(sentence, text or "<none>") <= 0.5, (sentence, text)
    recognizer.unload()


def test_guard_drops_silence_stock_phrases_and_unsure_text() -> None:
    guard = SpeechGuard()
    assert guard.reason(" Thank you.", -0.9, 0.2) == "stock phrase"
    assert guard.reason(" Thank you.", -0.2, 0.1) is None  # said with confidence: kept
    assert guard.reason(" [Music]", -0.8, 0.5) == "stock phrase"
    assert guard.reason(" Hello there.", -1.2, 0.7) == "no speech"
    assert guard.reason(" ...", -0.1, 0.0) == "empty"
    assert guard.reason(" Fluent music words.", -2.0, 0.1) is None
    assert SpeechGuard(log_prob_floor=-1.5).reason(" Fluent music words.", -2.0, 0.1) == (
        "low log-probability")


def test_language_vote_weights_by_seconds() -> None:
    vote = LanguageVote()
    assert vote.result() == (None, None)
    vote.add("en", 10.0, 0.9)
    vote.add("de", 4.0, 0.99)
    vote.add("en", 5.0, 0.6)
    vote.add(None, 100.0, 1.0)  # no language: no vote
    language, probability = vote.result()
    assert language == "en" and probability == pytest.approx((9.0 + 3.0) / 15.0)
    assert vote.total_seconds == pytest.approx(19.0)
    api = LanguageVote()  # the API reports no probability
    api.add("fr", 3.0)
    assert api.result() == ("fr", None)
