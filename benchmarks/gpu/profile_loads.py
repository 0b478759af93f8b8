"""Stage 1 model loads timed: one after another, side by side, and phase by phase.

Each mode runs in a fresh Python process (as a run's first loads do, it pays for importing
torch and transformers and for the CUDA context):

* ``serial``: speech, sounds, objects loaded one after another, as the old lock made them.
* ``parallel``: the three loaded from three threads released at once, as Stage 1 does.
* ``phases``: import torch, the CUDA context, import transformers' Whisper and AST classes,
  import ultralytics, then each load with those done (what is left is the load itself).
* ``warm``: the phases' imports and CUDA context first, then the three loads side by side:
  what Stage 1 would wait for if the imports were done earlier (say during the shots stage).

Per load it prints ``load_timing`` (backend.py): imports, waiting for and holding the process
lock (``from_pretrained``), total; and each model's parameter dtypes and devices.
``--cprofile N`` adds the top N functions (cumulative) of the phases mode's Whisper load.
Models come from ``benchmarks/gpu/random_stage1.py OUT`` (pass OUT as ``models``)::

    PYTHONPATH=/tmp/site:$PWD/src python3 benchmarks/gpu/profile_loads.py MODELS --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MODES = ("serial", "parallel", "phases", "warm")
LOADS = (("speech", "whisper-large-v3"), ("sounds", "ast-audioset"), ("objects", "yolov8n"))


def backends(models: Path, device: str) -> dict[str, Any]:
    from scenescribe import registry
    from scenescribe.options import ObjectOptions, SoundOptions, SpeechOptions

    options = {"speech": SpeechOptions(backend="whisper-large-v3"),
               "sounds": SoundOptions(backend="ast-audioset"), "objects": ObjectOptions()}
    return {kind: registry.create(name, kind, options=options[kind], device=device,
                                  model_dir=models) for kind, name in LOADS}


def describe(backend: Any) -> dict[str, Any]:
    """The model's parameter dtypes and devices (what the load made of it)."""
    net = backend.model  # Whisper's _Loaded.net, AST's _Ast.model, YOLO's DetectionModel
    for attr in ("net", "model"):
        if hasattr(getattr(net, attr, None), "parameters"):
            net = getattr(net, attr)
            break
    params = list(net.parameters())
    return {"dtypes": sorted({str(p.dtype) for p in params}),
            "devices": sorted({str(p.device) for p in params}),
            "params_m": round(sum(p.numel() for p in params) / 1e6, 1)}


def timed_load(backend: Any, clock0: float) -> dict[str, Any]:
    start = time.perf_counter()
    backend.load()
    end = time.perf_counter()
    return {"start_s": start - clock0, "end_s": end - clock0,
            **{k: round(v, 3) for k, v in backend.load_timing.items()}, **describe(backend)}


def child(models: Path, device: str, mode: str, top: int) -> dict[str, Any]:
    clock0 = time.perf_counter()
    result: dict[str, Any] = {"mode": mode, "phases": {}, "loads": {}}
    if mode in ("phases", "warm"):
        phases = result["phases"]
        t = time.perf_counter()
        import torch

        phases["import torch"] = time.perf_counter() - t
        if device.startswith("cuda"):
            t = time.perf_counter()
            torch.cuda.init()
            phases["torch.cuda.init"] = time.perf_counter() - t
            t = time.perf_counter()
            torch.zeros(1, device=device)
            phases["first allocation (context)"] = time.perf_counter() - t
        t = time.perf_counter()
        from transformers import ASTForAudioClassification, WhisperForConditionalGeneration

        del ASTForAudioClassification, WhisperForConditionalGeneration
        phases["import transformers Whisper+AST"] = time.perf_counter() - t
        t = time.perf_counter()
        from scenescribe.objects.yolo import import_ultralytics

        import_ultralytics()
        phases["import ultralytics"] = time.perf_counter() - t
    made = backends(models, device)
    if mode in ("phases", "warm"):  # every import a load names: what follows is the loads alone
        for b in made.values():
            t = time.perf_counter()
            b._imports()
            result["phases"][f"{b.name}: rest of its imports"] = time.perf_counter() - t
    if mode in ("parallel", "warm"):
        barrier = threading.Barrier(len(made))
        errors: dict[str, str] = {}

        def load(kind: str) -> None:
            barrier.wait()
            try:
                result["loads"][kind] = timed_load(made[kind], clock0)
            except Exception as exc:  # reported, not raised: the other loads still finish
                errors[kind] = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=load, args=(k,)) for k in made]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        result["errors"] = errors
    else:
        for kind, backend in made.items():
            if mode == "phases" and kind == "speech" and top:
                import cProfile
                import io
                import pstats

                profile = cProfile.Profile()
                result["loads"][kind] = profile.runcall(timed_load, backend, clock0)
                text = io.StringIO()
                pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(top)
                result["cprofile"] = text.getvalue()
            else:
                result["loads"][kind] = timed_load(backend, clock0)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    result["wall_s"] = time.perf_counter() - clock0
    return result


def report(result: dict[str, Any]) -> None:
    print(f"\n== {result['mode']}: {result['wall_s']:.2f} s from process start to all loaded")
    for name, seconds in result["phases"].items():
        print(f"  {name:<40} {seconds:7.2f} s")
    print(f"  {'load':<8} {'start':>6} {'end':>6} {'total':>6} {'imports':>7} {'wait':>6} "
          f"{'locked':>6}  dtypes / devices / M params")
    for kind, row in result["loads"].items():
        print(f"  {kind:<8} {row['start_s']:6.2f} {row['end_s']:6.2f} {row['load_s']:6.2f} "
              f"{row['imports_s']:7.2f} {row['wait_s']:6.2f} {row['exclusive_s']:6.2f}  "
              f"{','.join(row['dtypes'])} / {','.join(row['devices'])} / {row['params_m']}")
    rows = result["loads"].values()
    if rows:
        span = max(r["end_s"] for r in rows) - min(r["start_s"] for r in rows)
        print(f"  first load asked to last loaded: {span:.2f} s")
    for kind, error in result.get("errors", {}).items():
        print(f"  {kind} FAILED: {error}")
    if result.get("cprofile"):
        print(result["cprofile"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="random_stage1.py's output folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--cprofile", type=int, default=0, metavar="N")
    parser.add_argument("--json", type=Path, help="also write every mode's result here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.models, args.device, args.child, args.cprofile)))
        return 0
    results = []
    for mode in args.modes:
        command = [sys.executable, __file__, str(args.models), "--device", args.device,
                   "--child", mode, "--cprofile", str(args.cprofile)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            print(f"{mode} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["process_s"] = time.perf_counter() - start
        report(result)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
