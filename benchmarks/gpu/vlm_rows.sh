#!/usr/bin/env bash
# Stage 1's own wall clock and each VLM's rows (batched and the reference's one scene per call)
# over W1, on the GPU machine (the device tool), from the repository root, after
# engine_and_frames.sh or ray_w1.sh built W1 and the random Stage 1 models on the same warm
# machine (no carry needed):
#   bash benchmarks/gpu/vlm_rows.sh OUT stage1          # Stage 1 alone, --fresh: its wall clock
#   bash benchmarks/gpu/vlm_rows.sh OUT MODEL [MODEL...] # per model: 16 scenes per video pooled
#                                                        # (64), 1 per video one per call
# Each model is its own `bench` command under MODEL_S seconds (default 200) on the records
# Stage 1 left in .carry/bench-rows; its bench.json and bench.md go to OUT/MODEL at once.
set -uo pipefail
out=${1:?output folder}
shift
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1
# A run past its limit gets SIGABRT: faulthandler then prints every thread's stack to its log,
# so a hang says where it hung (three LLaVA-Vicuna runs on 2026-12-02 ended with no clue).
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
work=.carry/bench-rows
common=(.carry/w1 --out "$work" --config "${CONFIG:-benchmarks/gpu/w1.toml}" --random-weights
        --device cuda --model-dir .carry/models-random --executor local)
if [ ! -d "$work/runs" ] && [ "${1:-}" != stage1 ]; then
  set -- stage1 "$@"  # Stage 1 first, on its own limit: never inside the first model's
fi
for what in "$@"; do
  mkdir -p "$out/$what"
  rm -f "$work/bench.json" "$work/bench.md"  # a run that fails must not leave the last one
  if [ "$what" = stage1 ]; then
    timeout -s ABRT -k 15 "${MODEL_S:-200}" python3 -m scenescribe bench "${common[@]}" --fresh \
      --no-job-captions --mode scenescribe --max-scenes 1 --vlm llava-v1.6-mistral-7b \
      --note "Stage 1 alone (--no-job-captions): its job_wall_s is Stage 1's wall clock" \
      > "$out/$what/log.txt" 2>&1 || echo "stage1: exit $?" >> "$out/$what/log.txt"
  else
    timeout -s ABRT -k 15 "${MODEL_S:-200}" python3 -m scenescribe bench "${common[@]}" --no-fresh \
      --no-job-captions --vlm "$what" --mode ${MODES:-scenescribe --mode reference} --max-scenes 16 \
      --reference-max-scenes 1 --note "VLM rows on Stage 1's cached records" \
      > "$out/$what/log.txt" 2>&1 || echo "$what: exit $?" >> "$out/$what/log.txt"
  fi
  # Progress bars redraw with carriage returns: one line each, the last 300 kept.
  tr '\r' '\n' < "$out/$what/log.txt" | grep -v "it/s\]$" | tail -n 300 > "$out/$what/log.tail"
  rm -f "$out/$what/log.txt"
  cp "$work/bench.json" "$work/bench.md" "$out/$what/" 2>/dev/null
  grep -E "s/scene|job_wall|^\| " "$out/$what/bench.md" 2>/dev/null | head -20
  tail -n 5 "$out/$what/log.tail"
done
