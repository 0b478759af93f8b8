#!/usr/bin/env bash
# Runs on the GPU machine (the device tool), from the repository root:
#   [ONLY='w1_sitcom w1_interview'] [REF_SCENES=2] bash benchmarks/gpu/w1_bench.sh OUTDIR MODEL...
# Needs carried: .whl (av, scenedetect, platformdirs wheels) and .carry/media (the clips that
# scripts/make_w1_suite.py reads). Builds W1 once per machine, runs Stage 1 (shots; the GPU has
# no real speech/sound weights) and then `scenescribe bench` with full-size random-weight VLMs in
# both modes: batched (scenescribe) and one scene per generate call (reference), the latter on a
# subset of scenes per video.
set -euo pipefail
out=${1:?output folder}; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
suite=.carry/w1
if [ ! -f "$suite/.complete" ]; then
  start=$(date +%s)
  only=()
  for name in ${ONLY:-}; do only+=(--only "$name"); done
  python3 scripts/make_w1_suite.py --out "$suite" --media .carry/media --jobs 4 "${only[@]}"
  touch "$suite/.complete"
  echo "W1 built in $(( $(date +%s) - start )) s"
fi
vlms=()
for m in "$@"; do vlms+=(--vlm "$m"); done
python3 -m scenescribe bench "$suite" --out "$out" --config benchmarks/gpu/w1.toml \
  --random-weights --device cuda --stages none --reference-max-scenes "${REF_SCENES:-2}" \
  --baseline "${BASELINE:-llava-v1.6-mistral-7b}" "${vlms[@]}" || echo "bench exit $?"
