#!/usr/bin/env bash
# Issues 11 and 12 on the GPU machine (the device tool), from the repository root:
#   bash benchmarks/gpu/engine_and_frames.sh OUT
# Carried: .whl (av, ultralytics, lap, ... wheels), .carry/media, .carry/whisper-tok, .carry/yolo.
# 1. the caption engine A/B on W2-shaped scenes (caption_engine.py, one process per variant):
#    transformers' own SDPA (unpacked) against grouped heads packed for decoding, dynamic and
#    static KV cache, and the static cache at batch 128 (VARIANTS overrides);
# 2. W1 built once (.carry/w1) and the random Stage 1 models (.carry/models-random), which
#    ray_w1.sh's job then reuses on the same warm machine;
# 3. the scene frames' own pass over W1 at 4 decoders (the old default) and at the new default,
#    split into the decode pass alone (picks), + JPEGs written unflushed (nosync), + flushed
#    (frames, the stage as it runs).
# Every part writes its file under OUT as it finishes, so a part that overruns loses no other.
set -uo pipefail
out=${1:?output folder}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
} > "$out/machine.txt" 2>&1
timeout "${CAPTION_S:-330}" python3 benchmarks/gpu/caption_engine.py \
  --video .carry/media/real/big_buck_bunny_0_30.webm --scenes 128 --timeout 150 \
  --variants ${VARIANTS:-unpacked engine static static-cap128} --json "$out/captions_ab.json" \
  > "$out/captions_ab.txt" 2>&1
suite=.carry/w1
if [ ! -f "$suite/.complete" ]; then
  python3 scripts/make_w1_suite.py --out "$suite" --media .carry/media --jobs 14 \
    > "$out/w1_build.txt" 2>&1 && touch "$suite/.complete"
fi
models=.carry/models-random
if [ ! -f "$models/.complete" ]; then
  python3 benchmarks/gpu/random_stage1.py "$models" --whisper-tokenizer .carry/whisper-tok \
    --yolo .carry/yolo/yolov8n.pt > "$out/random_models.txt" 2>&1 && touch "$models/.complete"
fi
for workers in ${FRAME_WORKERS:-4 default}; do
  extra=()
  [ "$workers" != default ] && extra=(--workers "$workers")
  echo "== frames, decoders per video: $workers" >> "$out/frames.txt"
  timeout 120 python3 benchmarks/bench_frames.py "$suite"/*.mp4 \
    --modes ${FRAME_MODES:-picks nosync frames} "${extra[@]}" >> "$out/frames.txt" 2>&1
done
tail -n 3 "$out"/*.txt
