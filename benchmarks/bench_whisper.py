#!/usr/bin/env python
"""Whisper (transformers) speed: one video after another (the per-video path) against every
video's chunks pooled into one batched stream (``transcribe_many``, what the speech stage runs),
for each decoder: ``generate`` (transformers' loop, the path before 2026-12-02), ``static``
(``speech.static_decode`` without graphs) and ``graph`` (the same, one CUDA graph per step).

Prints audio seconds, wall seconds and the real-time factor (audio seconds per wall second) per
decoder, mode and batch size: the best of ``--runs`` alternating passes, after one untimed
warm-up batch per decoder (the first pass still pays for new batch shapes and graph captures).
Model load is never counted. ``--phases`` adds one pooled pass per decoder split into encoder,
decoding loop, alignment (the teacher-forced pass, and on CUDA the DTW), words (word grouping,
and off CUDA the DTW), the rest being audio reading, features and pooling; ``--check N``
decodes N chunks with every decoder and counts transcripts identical to the first decoder's
(random fp16 weights have near-ties; float32 should agree).

CPU, real tiny.en on the shared clips (the default):

    python benchmarks/bench_whisper.py [--clips synthetic/synthetic_cuts_speech.mp4 ...]

GPU, Whisper large-v3's architecture with random weights built here (every chunk decodes the
full 224 tokens, as in W1's benchmark) on noise files (``NxS`` or a list of durations):

    python benchmarks/bench_whisper.py --device cuda --random-large-v3 TOKENIZER_DIR \\
        --noise 328,459,273,168 --batch-size 64 --decoders generate graph --modes pooled

``--noise 328,459,273,168`` is W1's four durations (1,228 s); ``--clips $PWD/.carry/w1/*.mp4``
(absolute paths) reads W1 itself where it was built.

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
from typing import Any

import numpy as np

from scenescribe import registry
from scenescribe.bench import sync_device
from scenescribe.media import SAMPLE_RATE, probe
from scenescribe.options import SpeechOptions
from scenescribe.progress import NullProgress
from scenescribe.records import VideoInfo

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = ("synthetic/synthetic_cuts_speech.mp4", "real/grid/bbaf2n.mpg",
                 "real/grid/lrwp9a.mpg", "real/grid/sbwe5n.mpg", "real/grid/id2_vcd_swwp2s.mpg",
                 "real/big_buck_bunny_0_30.webm")


def noise_files(folder: Path, spec: str) -> list[Path]:
    """``NxS`` (N files of S seconds) or ``S1,S2,...``: mono 16 kHz WAV files of
    amplitude-modulated noise (loud enough for the energy gate; random weights decode anything
    the same)."""
    if "x" in spec.lower():
        count, each = (int(x) for x in spec.lower().split("x"))
        durations = [float(each)] * count
    else:
        durations = [float(x) for x in spec.split(",")]
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate(durations):
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
    parser.add_argument("--decoders", nargs="+", default=["generate", "auto"],
                        choices=["generate", "static", "graph", "auto"],
                        help="auto: graph on CUDA, static on CPU")
    parser.add_argument("--phases", action="store_true",
                        help="one more pooled pass per decoder, split by phase")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="decode N chunks with every decoder and compare transcripts")
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
        decoders = [("graph" if args.device.startswith("cuda") else "static")
                    if d == "auto" else d for d in args.decoders]
        decoders = list(dict.fromkeys(decoders))
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
            recognizer.model = loaded
            for decoder in decoders:  # kernels, caches, the one-chunk graph
                recognizer.decoder = decoder
                recognizer.decode([(0.0, _first_seconds(infos[0], 30.0))])
            walls: dict[tuple[str, str], list[float]] = {}
            heard: dict[tuple[str, str], int] = {}
            for _ in range(args.runs):  # alternating, so none gets the warmer machine
                for decoder in decoders:
                    recognizer.decoder = decoder
                    for mode in args.modes:
                        wall, words = run_mode(recognizer, infos, mode)
                        walls.setdefault((decoder, mode), []).append(wall)
                        heard[decoder, mode] = words
            for (decoder, mode), times in walls.items():
                best = min(times)
                print(f"{decoder:>8} {mode:>9} batch {size:3d}: {best:7.2f} s wall (best of "
                      f"{len(times)}), {audio / best:7.1f}x real time, "
                      f"{heard[decoder, mode]} words")
            if args.phases:
                for decoder in decoders:
                    recognizer.decoder = decoder
                    print(f"{decoder:>8}   pooled batch {size:3d}, phases: "
                          f"{phases(recognizer, infos)}")
        if args.check and loaded is not None:
            check(recognizer, infos, decoders, args.check)
    return 0


def phases(recognizer: Any, infos: list[VideoInfo]) -> str:
    """One pooled pass with each phase timed (device synchronised at its edges)."""
    from scenescribe.speech import hf_whisper

    net = recognizer.model.net
    static = recognizer._static()
    spent: dict[str, float] = {}
    patched: list[tuple[Any, str, Any]] = []

    def timed(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            sync_device(recognizer.device)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync_device(recognizer.device)
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

        patched.append((owner, name, original))
        setattr(owner, name, wrapper)

    timed(net.model.encoder, "forward", "encoder")
    timed(static if static is not None else net, "generate", "decoding")
    timed(recognizer, "_align", "alignment")
    timed(hf_whisper, "align_words", "words")
    try:
        wall, _ = run_mode(recognizer, infos, "pooled")
    finally:
        for owner, name, original in reversed(patched):
            if owner is hf_whisper:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # the instance attribute shadowed the class's method
    spent["alignment"] = spent.get("alignment", 0.0) - spent.get("words", 0.0)
    spent["rest"] = wall - sum(spent.values())
    return f"{wall:.2f} s = " + ", ".join(f"{k} {v:.2f}" for k, v in spent.items())


def check(recognizer: Any, infos: list[VideoInfo], decoders: list[str], count: int) -> None:
    """The first ``count`` 30 s chunks decoded (as one batch) by every decoder; transcripts
    and word times compared with the first decoder's."""
    from scenescribe.media import decode_audio

    batch: list[tuple[float, np.ndarray]] = []
    for info in infos:
        samples = decode_audio(info.path)
        step = 30 * SAMPLE_RATE
        batch += [(k / SAMPLE_RATE, samples[k: k + step]) for k in range(0, len(samples), step)
                  if len(samples[k: k + step]) > SAMPLE_RATE]
    batch = batch[:count]
    out = {}
    for decoder in decoders:
        recognizer.decoder = decoder
        out[decoder] = recognizer.decode(batch)
    first = decoders[0]
    for decoder in decoders[1:]:
        same = [(a, b) for a, b in zip(out[first], out[decoder], strict=True) if a.text == b.text]
        shift = max((abs(x.start - y.start) for a, b in same
                     for x, y in zip(a.words, b.words, strict=True)), default=0.0)
        tokens = sum(len(a.text) for a, _ in same)
        print(f"check: {decoder} vs {first}: {len(same)}/{len(batch)} chunks with the same "
              f"transcript ({tokens} characters), largest word-start difference {shift:.3f} s")



def _first_seconds(info: VideoInfo, seconds: float) -> np.ndarray:
    from scenescribe.media import decode_audio

    samples = decode_audio(info.path)
    return samples[: int(seconds * SAMPLE_RATE)]


if __name__ == "__main__":
    sys.exit(main())
