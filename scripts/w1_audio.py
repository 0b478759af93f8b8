"""Audio of the W1 suite builder (scripts/make_w1_suite.py): the spoken sentences (GRID and the
synthetic clip's espeak-ng speech), trimmed and level-matched, the Big Buck Bunny background, and
the per-video mono mix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scenescribe.media import decode_audio
from w1_sources import FPS, SAMPLE_RATE, Shot, grid_sentence

if TYPE_CHECKING:
    from make_w1_suite import VideoSpec

BACKGROUND_GAIN = 0.25  # the soundtrack sits about 12 dB under the speech


@dataclass(frozen=True)
class Snippet:
    """One spoken sentence, trimmed, at SAMPLE_RATE; speech span and words relative to its start."""

    text: str
    source: str
    samples: np.ndarray
    speech_start_s: float
    speech_end_s: float
    words: tuple[tuple[float, float, str], ...] = ()


def load_snippets(media: Path) -> list[Snippet]:
    """The GRID sentences and the synthetic clip's espeak-ng sentences, level-matched.

    A GRID sentence's extent is measured (its recordings carry a noise floor); an espeak-ng
    sentence's comes from the synthetic clip's own ground truth.
    """
    snippets = []
    for path in sorted((media / "real/grid").glob("*.mpg")):
        code = path.stem.rsplit("_", 1)[-1]
        audio = decode_audio(path, SAMPLE_RATE)
        align = path.with_name(f"{code}.align")
        words = [(int(a) / 25_000, int(b) / 25_000, w) for a, b, w in
                 (line.split() for line in align.read_text().splitlines()) if w != "sil"
                 ] if align.exists() else []
        snippets.append(_snippet(grid_sentence(code), f"grid:{path.name}", audio,
                                 _speech_span(audio), words))
    synthetic = media / "synthetic/synthetic_cuts_speech.mp4"
    audio = decode_audio(synthetic, SAMPLE_RATE)
    gt = json.loads(synthetic.with_suffix(".gt.json").read_text())
    for row in gt["transcript"]:
        snippets.append(_snippet(row["text"], f"espeak-ng:{synthetic.name}#{row['index']}",
                                 audio, (row["start_s"], row["end_s"]), []))
    return snippets


def _snippet(text: str, source: str, audio: np.ndarray, span: tuple[float, float],
             words: list[tuple[float, float, str]]) -> Snippet:
    """Cut ``span`` (seconds) with a little air either side, fade the edges, match the level."""
    a = max(0, int((span[0] - 0.12) * SAMPLE_RATE))
    # Generous air after the span: a last word's soft tail ("now") may sit under the threshold.
    piece = audio[a:int((span[1] + 0.35) * SAMPLE_RATE)].astype(np.float32)
    fade = np.linspace(0.0, 1.0, SAMPLE_RATE // 100, dtype=np.float32)
    piece[:len(fade)] *= fade
    piece[-len(fade):] *= fade[::-1]
    # Loudest 20 ms at -13 dBFS, peaks below -2.5 dBFS so speech over the background never clips.
    gain = min(10 ** ((-13.0 - _window_db(piece).max()) / 20), 0.75 / np.abs(piece).max())
    piece *= np.float32(gain)
    offset = a / SAMPLE_RATE
    shifted = tuple((round(x - offset, 4), round(y - offset, 4), w) for x, y, w in words)
    return Snippet(text, source, piece, round(span[0] - offset, 3), round(span[1] - offset, 3),
                   shifted)


def _window_db(audio: np.ndarray, window_s: float = 0.02) -> np.ndarray:
    n = int(window_s * SAMPLE_RATE)
    frames = audio[: len(audio) // n * n].reshape(-1, n)
    return 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)


def _speech_span(audio: np.ndarray) -> tuple[float, float]:
    """First and last 20 ms window within 20 dB of the loudest: the sentence's extent.

    20 dB sits above the GRID recordings' noise floor; on swwp2s it gives 0.56-2.16 s against
    0.49-2.21 s in the corpus's word alignment (a soft initial "s" starts under the threshold).
    """
    db = _window_db(audio)
    active = np.nonzero(db > db.max() - 20.0)[0]
    return round(float(active[0]) * 0.02, 3), round(float(active[-1] + 1) * 0.02, 3)


def load_background(media: Path) -> np.ndarray:
    """Big Buck Bunny's soundtrack (ambience and music, no speech) as mono float32."""
    return decode_audio(media / "real/big_buck_bunny_0_30.webm", SAMPLE_RATE)


def mix_audio(spec: VideoSpec, shots: list[Shot], background: np.ndarray,
              snippets: list[Snippet], speech: list[tuple[int, int]]) -> np.ndarray:
    """Mono mix: a quiet background segment per shot (faded at cuts) plus the speech."""
    total = spec.duration_s * SAMPLE_RATE
    out = np.zeros(total, np.float32)
    fade = SAMPLE_RATE // 100
    for shot in shots:
        a = shot.start_frame * SAMPLE_RATE // FPS
        b = min(total, (shot.start_frame + shot.n_frames) * SAMPLE_RATE // FPS)
        first = int(shot.background_offset_s * SAMPLE_RATE)
        piece = background.take(np.arange(first, first + b - a), mode="wrap") * BACKGROUND_GAIN
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
        out[a:b] += piece
    for at, k in speech:
        samples = snippets[k].samples
        out[at:at + len(samples)] += samples
    return np.clip(out, -1.0, 1.0)
