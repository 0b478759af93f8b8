"""Where Stage 1's GPU time goes: import and CUDA start-up, each model load, and pooled Whisper.

Runs on the GPU machine from the repository root, after the wheels are installed (see
``w1_bench.sh``); builds the random-weight Stage 1 models itself when ``MODELS`` lacks them:

    PYTHONPATH=/tmp/site:$PWD/src python3 benchmarks/gpu/profile_stage1.py MODELS \\
        --whisper-tokenizer .carry/whisper-tok --yolo .carry/yolo/yolov8n.pt [--noise 4x300]

Prints seconds per start-up phase, each load's wall time with its 12 costliest calls
(cProfile, cumulative), and a torch profile of one pooled Whisper pass (top kernels by CUDA
time, top operators by CPU time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))


def timed(label: str, fn: object) -> object:
    start = time.perf_counter()
    result = fn()  # type: ignore[operator]
    print(f"{label:<40} {time.perf_counter() - start:7.2f} s", flush=True)
    return result


def profile_load(backend: object, top: int = 12) -> None:
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    backend.load()  # type: ignore[attr-defined]
    profiler.disable()
    print(f"load {backend.name}: {time.perf_counter() - start:.2f} s", flush=True)  # type: ignore[attr-defined]
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    print("\n".join(line for line in text.getvalue().splitlines()[6:] if line.strip()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path)
    parser.add_argument("--whisper-tokenizer", type=Path, required=True)
    parser.add_argument("--yolo", type=Path, required=True)
    parser.add_argument("--noise", default="4x300")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    torch = timed("import torch", lambda: __import__("torch"))
    timed("CUDA context + first matmul", lambda: (torch.ones(64, 64, device="cuda") @
                                                   torch.ones(64, 64, device="cuda")).sum().item())
    timed("import transformers", lambda: __import__("transformers"))
    timed("import ultralytics", lambda: __import__("ultralytics"))
    if not (args.models / "whisper" / "hf-whisper-large-v3").exists():
        import random_stage1

        timed("build random Stage 1 models", lambda: random_stage1.main(
            [str(args.models), "--whisper-tokenizer", str(args.whisper_tokenizer),
             "--yolo", str(args.yolo)]))

    from scenescribe import registry
    from scenescribe.options import ObjectOptions, SoundOptions, SpeechOptions

    made = {}
    for name, kind, options in (("whisper-large-v3", "speech",
                                 SpeechOptions(batch_size=args.batch_size)),
                                ("ast-audioset", "sounds", SoundOptions()),
                                ("yolov8n", "objects", ObjectOptions())):
        made[name] = registry.create(name, kind, options=options, device="cuda",
                                     model_dir=args.models)
        profile_load(made[name])

    from bench_whisper import noise_files
    from scenescribe.media import probe
    from scenescribe.progress import NullProgress

    recognizer = made["whisper-large-v3"]
    with tempfile.TemporaryDirectory() as tmp:
        infos = [probe(p) for p in noise_files(Path(tmp), args.noise)]
        audio = sum(i.duration for i in infos)
        timed("whisper warm-up (one file)", lambda: dict(recognizer.transcribe_many(
            [(infos[0], NullProgress())])))
        start = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            dict(recognizer.transcribe_many([(i, NullProgress()) for i in infos]))
        wall = time.perf_counter() - start
        print(f"pooled whisper under the profiler: {wall:.1f} s for {audio:.0f} s of audio "
              f"({audio / wall:.1f}x real time)")
        averages = prof.key_averages()
        print(averages.table(sort_by="self_cuda_time_total", row_limit=20))
        print(averages.table(sort_by="self_cpu_time_total", row_limit=20))
    return 0


if __name__ == "__main__":
    sys.exit(main())
