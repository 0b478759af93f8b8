#!/usr/bin/env bash
# The whole W1 job (ray_w1.sh's local run with LLaVA-Mistral captions) under several variants,
# back to back on one warm machine, each followed by its timeline (timeline.py). On the GPU
# machine, from the repository root, after W1 and the random models are built (ray_w1.sh's
# first call) and with .carry/tnw carried:
#   [SPY=40] bash benchmarks/gpu/job_variants.sh OUT waves [stagemajor] [nostream] [nice0] [stage1]
#     [switch] [onevideo] [stage1onevideo] [twovideos] [stage1twovideos] [speechexclusive]
#     [stage1speechexclusive] [speechshared] [stage1speechshared] [stage1switch]
#     [nospool] [stage1nospool] [yolopredict] [stage1yolopredict] [stage1nice10]
#     [stage1loadswitch0] [stage1loadswitch100] [stage1nice19] [stage1noaudiospool]
# Variants: waves (the default schedule), stagemajor (SCENESCRIBE_WAVES=0: every stage waits
# for all videos), nostream (SCENESCRIBE_CAPTION_STREAM=0: the caption stage launches on the
# default CUDA stream), nice0 (SCENESCRIBE_SHOT_NICE=0: the shot workers at the parent's
# priority), stage1 (the same job without captions: Stage 1's wall clock), switch (the
# interpreter's thread switch interval at 0.5 ms instead of 5 ms, set by a sitecustomize on the
# job's path only; stage1switch: the same for Stage 1 alone: small-call loops such as speech's
# wait out other threads' switch interval at each call, see benchmarks/bench_dtw.py), onevideo
# / twovideos (SCENESCRIBE_COMPONENT_VIDEOS=1 / 2: the tracker and
# the sound tagger one video at a time (the default since 2026-12-03j) / two, waves overlapping),
# speechexclusive (SCENESCRIBE_SPEECH_EXCLUSIVE=1: each Whisper batch holds the GPU alone;
# speechshared names the default, sharing it, as 2026-12-03j/k measured it); the stage1...
# variants are the same without captions. stage1trace: Stage 1 alone with a CUDA trace of
# Whisper's first batch (cuda_window.py; trace_summary.py's reading in OUT/trace_summary.txt).
# stage1lean: Stage 1 with 4 frame decoders and 2 tracker decoders (the defaults since
# 2026-12-04n); stage1wide: with 16 and 4 (the defaults before): does speech wait for the CPU?
# nospool / stage1nospool: the object detector decodes each video itself (SCENESCRIBE_SPOOL_GB=0)
# instead of reading the frames the shot detector's decode kept (media/spool.py).
# yolopredict / stage1yolopredict: YOLO through ultralytics' predict (SCENESCRIBE_YOLO_PREDICT=1)
# instead of the batched path on the device (objects/yolo_batch.py).
# stage1nice10: the shot segment workers at nice 10 instead of 5 (SCENESCRIBE_SHOT_NICE=10): do
# the loads' imports (Whisper's 24-28 s on a slow host, -04-x/b) wait for the cores? stage1nice19:
# the same at nice 19 (the weight a nice-0 thread has over them: 3x at 5, 9x at 10, 68x at 19).
# stage1loadswitch0 / stage1loadswitch100: the switch interval during model loads left at 5 ms
# (SCENESCRIBE_LOAD_SWITCH_US=0, as before 2026-12-04x) / 100 us instead of the default 500 us.
# stage1noaudiospool: the sound tagger decodes the audio again instead of reading the speech
# stage's spool (SCENESCRIBE_AUDIO_SPOOL=0, as before 2026-12-04y).
# SPY: py-spy (a wheel in .carry/pyspy) samples
# the first variant's job from SPY_AT (35) s after its bench process starts, for SPY seconds at SPY_RATE (50) Hz, into
# OUT/spy.txt (raw stacks per thread, idle ones too; SPY_FLAGS="--threads --gil": only the
# thread holding the interpreter lock at each sample).
set -uo pipefail
out=${1:?output folder}; shift
mkdir -p "$out"
export CONFIG=${CONFIG:-benchmarks/gpu/w1_speech_graph.toml}
site=/tmp/site
first=1
for variant in "$@"; do
  env=()
  model=llava-v1.6-mistral-7b
  case $variant in
    waves) ;;
    stage1) model= ;;
    nice0) env=(SCENESCRIBE_SHOT_NICE=0) ;;
    stagemajor) env=(SCENESCRIBE_WAVES=0) ;;
    nostream) env=(SCENESCRIBE_CAPTION_STREAM=0) ;;
    onevideo) env=(SCENESCRIBE_COMPONENT_VIDEOS=1) ;;
    stage1onevideo) model= env=(SCENESCRIBE_COMPONENT_VIDEOS=1) ;;
    twovideos) env=(SCENESCRIBE_COMPONENT_VIDEOS=2) ;;
    stage1twovideos) model= env=(SCENESCRIBE_COMPONENT_VIDEOS=2) ;;
    speechexclusive) env=(SCENESCRIBE_SPEECH_EXCLUSIVE=1) ;;
    stage1speechexclusive) model= env=(SCENESCRIBE_SPEECH_EXCLUSIVE=1) ;;
    speechshared) ;;
    stage1speechshared) model= ;;
    switch) echo "import sys; sys.setswitchinterval(0.0005)" > "$site/sitecustomize.py" ;;
    stage1switch) model=
      echo "import sys; sys.setswitchinterval(0.0005)" > "$site/sitecustomize.py" ;;
    stage1lean) model= env=(SCENESCRIBE_FRAME_WORKERS=4 SCENESCRIBE_DECODE_WORKERS=2) ;;
    stage1wide) model= env=(SCENESCRIBE_FRAME_WORKERS=16 SCENESCRIBE_DECODE_WORKERS=4) ;;
    stage1nospool) model= env=(SCENESCRIBE_SPOOL_GB=0) ;;
    nospool) env=(SCENESCRIBE_SPOOL_GB=0) ;;
    yolopredict) env=(SCENESCRIBE_YOLO_PREDICT=1) ;;
    stage1yolopredict) model= env=(SCENESCRIBE_YOLO_PREDICT=1) ;;
    stage1nice10) model= env=(SCENESCRIBE_SHOT_NICE=10) ;;
    stage1nice19) model= env=(SCENESCRIBE_SHOT_NICE=19) ;;
    stage1noaudiospool) model= env=(SCENESCRIBE_AUDIO_SPOOL=0) ;;
    stage1loadswitch0) model= env=(SCENESCRIBE_LOAD_SWITCH_US=0) ;;
    stage1loadswitch100) model= env=(SCENESCRIBE_LOAD_SWITCH_US=100) ;;
    stage1trace) model= env=(TRACE_OUT=/tmp/trace)
      rm -rf /tmp/trace
      printf 'import sys\nsys.path.insert(0, "%s")\nimport cuda_window\ncuda_window.arm()\n' \
        "$PWD/benchmarks/gpu" > "$site/sitecustomize.py" ;;
    *) echo "unknown variant $variant"; exit 2 ;;
  esac
  env ${env[@]+"${env[@]}"} bash benchmarks/gpu/ray_w1.sh "$out/$variant" local $model \
    > "$out/$variant.log" 2>&1 &
  job=$!
  if [ "$first" = 1 ] && [ -n "${SPY:-}" ] && ls .carry/pyspy/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/spy .carry/pyspy/*.whl
    # SPY_AT counts from the bench process's start, not the script's (ray_w1.sh sets up first:
    # with SPY_AT=4 py-spy once found no process and gave up).
    pid=
    for _ in $(seq 600); do
      pid=$(pgrep -f "scenescribe bench" | head -1)
      [ -n "$pid" ] && break
      sleep 0.1
    done
    sleep "${SPY_AT:-35}"
    # SPY_FLAGS="--threads --gil": only the thread holding the interpreter lock is sampled.
    # shellcheck disable=SC2086
    /tmp/spy/bin/py-spy record --pid "$pid" --duration "$SPY" --rate "${SPY_RATE:-50}" --format raw ${SPY_FLAGS:---threads --idle} \
      --nonblocking -o "$out/spy.txt" > "$out/spy.log" 2>&1 || echo "py-spy failed: $(tail -2 "$out/spy.log")"
  fi
  wait "$job"
  first=0
  rm -f "$site/sitecustomize.py"
  tail -2 "$out/$variant.log"
  python3 benchmarks/gpu/timeline.py "$out/$variant/local/bench.json" || true
  if [ "$variant" = stage1trace ] && [ -f /tmp/trace/trace.json ]; then
    python3 benchmarks/gpu/trace_summary.py /tmp/trace > "$out/trace_summary.txt" 2>&1
    head -60 "$out/trace_summary.txt"
  fi
  # The device tool brings back files at most two folders below its output folder.
  cp "$out/$variant/local/bench.json" "$out/$variant.bench.json" 2>/dev/null || true
done
