#!/usr/bin/env python
"""Whisper (transformers) speed: one video after another (the per-video path) against every
video's chunks pooled into one batched stream (``transcribe_many``, what the speech stage runs).

Prints audio seconds, wall seconds and the real-time factor (audio seconds per wall second) per
mode and batch size: the best of ``--runs`` alternating passes, after one untimed warm-up batch
(the first pass still pays for new batch shapes). Model load is never counted.

CPU, real tiny.en on the shared clips (the default):

    python benchmarks/bench_whisper.py [--clips synthetic/synthetic_cuts_speech.mp4 ...]

GPU, Whisper large-v3's architecture with random weights built here (every chunk decodes the
full 224 tokens, as in W1's benchmark) on N noise files of S seconds each:

    python benchmarks/bench_whisper.py --device cuda --random-large-v3 TOKENIZER_DIR \\
        --noise 4x300 --batch-size 32 64

``TOKENIZER_DIR`` is a real Whisper folder for the tokenizer and configs (tiny.en's, weights
not needed), as for ``benchmarks/gpu/random_stage1.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from scenescribe import registry
from scenescribe.media import SAMPLE_RATE, probe
from scenescribe.options import SpeechOptions
from scenescribe.progress import NullProgress
from scenescribe.records import VideoInfo

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = ("synthetic/synthetic_cuts_speech.mp4", "real/grid/bbaf2n.mpg",
                 "real/grid/lrwp9a.mpg", "real/grid/sbwe5n.mpg", "real/grid/id2_vcd_swwp2s.mpg",
                 "real/big_buck_bunny_0_30.webm")


def noise_files(folder: Path, spec: str) -> list[Path]:
    """``NxS``: N mono 16 kHz WAV files of S seconds of amplitude-modulated noise (loud enough
    for the energy gate; random weights decode anything the same)."""
    count, seconds = (int(x) for x in spec.lower().split("x"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 0.3 * t + i)  # syllable-free "speech" level
        samples = (rng.normal(0, 0.1, t.size) * envelope).clip(-1, 1)
        path = folder / f"noise{i}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes((samples * 32767).astype("<i2").tobytes())
        paths.append(path)
    return paths


def run_mode(recognizer: object, infos: list[VideoInfo], mode: str) -> tuple[float, int]:
    """Wall seconds of one mode over every video, and the number of words heard."""
    start = time.perf_counter()
    if mode == "per-video":
        results = [recognizer.transcribe(info, NullProgress()) for info in infos]
    else:
        got = dict(recognizer.transcribe_many([(info, NullProgress()) for info in infos]))
        failed = {i: r for i, r in got.items() if isinstance(r, Exception)}
        if failed:
            raise SystemExit(f"pooled run failed: {failed}")
        results = [got[i] for i in range(len(infos))]
    wall = time.perf_counter() - start
    return wall, sum(len(r.words) for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS),
                        help="media files, relative to --media")
    parser.add_argument("--media", type=Path, default=Path(os.environ.get(
        "SCENESCRIBE_SHARED", ROOT.parent / "shared")) / "media")
    parser.add_argument("--backend", default="whisper-tiny.en")
    parser.add_argument("--weights", help="a Whisper folder instead of the registry's")
    parser.add_argument("--random-large-v3", type=Path, metavar="TOKENIZER_DIR",
                        help="build large-v3's architecture with random weights (GPU timing)")
    parser.add_argument("--noise", metavar="NxS", help="N noise files of S seconds as the clips")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8])
    parser.add_argument("--modes", nargs="+", default=["per-video", "pooled"],
                        choices=["per-video", "pooled"])
    parser.add_argument("--compute-type", default="default")
    parser.add_argument("--runs", type=int, default=2, help="passes per mode; the best is kept")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if args.random_large_v3:
            sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
            from random_stage1 import build_whisper

            weights = str(build_whisper(Path(tmp), args.random_large_v3, args.device))
        paths = (noise_files(Path(tmp), args.noise) if args.noise
                 else [args.media / c for c in args.clips])
        infos = [probe(p) for p in paths]
        audio = sum(i.duration for i in infos if i.has_audio)
        print(f"{len(infos)} files, {audio:.1f} s of audio, {args.device}, "
              f"{weights or args.backend}")
        loaded = None
        for size in args.batch_size:
            options = SpeechOptions(batch_size=size, weights=weights,
                                    compute_type=args.compute_type)
            recognizer = registry.create(args.backend, "speech", options=options,
                                         device=args.device,
                                         model_dir=registry.model_dir_from_env())
            if loaded is None:
                start = time.perf_counter()
                recognizer.load()
                loaded = recognizer.model
                print(f"model load {time.perf_counter() - start:.1f} s "
                      f"({recognizer.facts().get('attention')})")
                warm = infos[0]
                recognizer.decode([(0.0, _first_seconds(warm, 30.0))])  # kernels, caches
            recognizer.model = loaded
            walls: dict[str, list[float]] = {mode: [] for mode in args.modes}
            for _ in range(args.runs):  # modes alternate, so neither gets the warmer machine
                for mode in args.modes:
                    wall, words = run_mode(recognizer, infos, mode)
                    walls[mode].append(wall)
            for mode, times in walls.items():
                best = min(times)
                print(f"{mode:>9} batch {size:3d}: {best:7.2f} s wall (best of {len(times)}), "
                      f"{audio / best:7.1f}x real time, {words} words")
    return 0


def _first_seconds(info: VideoInfo, seconds: float) -> np.ndarray:
    from scenescribe.media import decode_audio

    samples = decode_audio(info.path)
    return samples[: int(seconds * SAMPLE_RATE)]


if __name__ == "__main__":
    sys.exit(main())
