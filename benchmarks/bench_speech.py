"""Speech WER on real spoken sentences: scenescribe's default CPU speech beside plain
faster-whisper with its own defaults, on the same audio files, in one run.

Audio: the four GRID clips of ``../shared/media/real/grid`` (3 s each), the three ~30 s
montages of them that ``tests/test_speech_montage.py`` builds (several orders, repeats and
pauses), and ``--random N`` more montages of random order and pauses (``--seed``). Montages are
written as float32 WAV files in a temporary folder; both recognizers read the same file.

    python benchmarks/bench_speech.py                  # GRID clips and the three montages
    python benchmarks/bench_speech.py --random 20 --seed 1

scenescribe: ``faster-whisper-tiny.en`` with default ``SpeechOptions`` (batched, Silero VAD,
the shared speech guard). Plain: ``WhisperModel(path, device="cpu",
compute_type="float32").transcribe(file)`` with every other setting at faster-whisper's default
(sequential, no VAD, conditioning on previous text, temperature fallback). "in place" counts the
sentences scenescribe heard inside their own clip's span (word midpoints, WER <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the montage builder lives with its test
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jiwer  # noqa: E402

from test_speech_montage import (  # noqa: E402
    CLIPS,
    GRID_DIR,
    MONTAGES,
    Montage,
    build_montage,
    grid_sentence,
    montage_from,
    normalise,
    slot_texts,
    write_wav,
)


def random_montage(rng: random.Random, seconds: float = 28.0) -> Montage:
    """GRID clips in random order (repeats allowed) with 0-1.2 s pauses, about 30 s."""
    order: list[str] = []
    gaps: list[float] = []
    total = 0.0
    while total < seconds:
        order.append(rng.choice(CLIPS))
        gaps.append(round(rng.uniform(0.0, 1.2), 3))
        total += 2.978 + gaps[-1]
    return montage_from(order, gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=0, help="random montages to add")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=int, default=None,
                        help="seconds of speech per batched window (default: the backend's)")
    parser.add_argument("--no-plain", action="store_true", help="scenescribe only")
    parser.add_argument("--synthetic", action="store_true",
                        help="add synthetic/synthetic_cuts_speech.mp4 (its .gt.json text)")
    parser.add_argument("--model-dir", default=os.environ.get(
        "SCENESCRIBE_MODEL_DIR", str(ROOT.parent / "shared" / "models")))
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    from scenescribe import registry
    from scenescribe.media import probe
    from scenescribe.options import SpeechOptions
    from scenescribe.progress import NullProgress

    weights = Path(args.model_dir) / "whisper" / "faster-whisper-tiny.en"
    ours = registry.create("faster-whisper-tiny.en", "speech", options=SpeechOptions(),
                           device="cpu", model_dir=Path(args.model_dir))
    ours.load()
    if args.window:
        ours.window_seconds = args.window
    plain = WhisperModel(str(weights), device="cpu", compute_type="float32")

    with tempfile.TemporaryDirectory() as folder:
        items: list[tuple[str, Path, Montage | None, str]] = [
            (stem, GRID_DIR / f"{stem}.mpg", None, grid_sentence(stem)) for stem in CLIPS]
        if args.synthetic:
            clip = GRID_DIR.parents[1] / "synthetic" / "synthetic_cuts_speech.mp4"
            truth = json.loads(clip.with_suffix(".gt.json").read_text())["transcript"]
            items.append(("synthetic", clip, None, " ".join(s["text"] for s in truth)))
        montages = [(name, build_montage(name)) for name in MONTAGES]
        rng = random.Random(args.seed)
        montages += [(f"random{i}", random_montage(rng)) for i in range(args.random)]
        for name, montage in montages:
            path = write_wav(Path(folder) / f"{name}.wav", montage.audio)
            items.append((f"montage {name}", path, montage, montage.reference))

        print(f"{'audio':<22} {'words':>5} {'scenescribe':>11} {'plain':>7} {'in place':>9} "
              f"{'s/ours':>7} {'s/plain':>7}")
        sums = {"grid": [0.0, 0.0, 0], "montage": [0.0, 0.0, 0], "synthetic": [0.0, 0.0, 0]}
        for name, path, montage, reference in items:
            start = time.perf_counter()
            words = ours.transcribe(probe(path), NullProgress()).words
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            plain_text = ""
            if not args.no_plain:
                segments, _ = plain.transcribe(str(path))
                plain_text = " ".join(s.text for s in segments)
            plain_s = time.perf_counter() - start
            ref = normalise(reference)
            ours_wer = jiwer.wer(ref, normalise(" ".join(w.text for w in words)) or "<none>")
            plain_wer = jiwer.wer(ref, normalise(plain_text) or "<none>")
            in_place = ""
            if montage is not None:
                texts = slot_texts(montage, words)
                good = sum(jiwer.wer(sentence, text or "<none>") <= 0.5
                           for (_, _, sentence), text in zip(montage.slots, texts, strict=False))
                in_place = f"{good}/{len(montage.slots)}"
            kind = "montage" if montage is not None else "grid"
            if name == "synthetic":
                kind = "synthetic"
            n = len(ref.split())
            sums[kind][0] += ours_wer * n
            sums[kind][1] += plain_wer * n
            sums[kind][2] += n
            print(f"{name:<22} {n:>5} {ours_wer:>11.3f} {plain_wer:>7.3f} {in_place:>9} "
                  f"{ours_s:>7.1f} {plain_s:>7.1f}", flush=True)
        for kind, (ours_e, plain_e, n) in sums.items():
            if n:
                    print(f"{'pooled ' + kind:<22} {n:>5} {ours_e / n:>11.3f} {plain_e / n:>7.3f}")


if __name__ == "__main__":
    main()
