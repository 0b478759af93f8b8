#!/usr/bin/env bash
# Frame extraction and the object tracker on the GPU machine (the device tool), repo root:
#   bash benchmarks/gpu/frames_bench.sh [PASSES...]
# Carried: .whl (av, ultralytics, ultralytics-thop, lap wheels), .carry/media (for W1) and
# .carry/yolo/yolov8n.pt. Builds W1 once (.carry/w1), then prints, for the four videos:
# the frames stage (JPEGs from their own pass), the tracker alone (YOLO batched + ByteTrack),
# and the run's frames+objects node frames-first and decode-once (one shared pass), each with
# the frames' seconds, the tracker's seconds and frames/s. PASSES: videos side by side to try
# for decode-once besides the default (e.g. 1 2). WORKERS="8 16": the frames alone with that
# many segment decoders (default: cores / 4).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
suite=.carry/w1
if [ ! -f "$suite/.complete" ]; then
  python3 scripts/make_w1_suite.py --out "$suite" --media .carry/media --jobs 8
  touch "$suite/.complete"
fi
nproc
python3 benchmarks/bench_frames.py "$suite"/*.mp4 --device cuda --model-dir .carry \
  --modes first once frames track
for p in "$@"; do
  python3 benchmarks/bench_frames.py "$suite"/*.mp4 --device cuda --model-dir .carry \
    --modes once --passes "$p"
done
for w in ${WORKERS:-}; do
  python3 benchmarks/bench_frames.py "$suite"/*.mp4 --modes frames --workers "$w"
done
