# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
SHARED ?= $(abspath ../shared)
BIN := $(VENV)/bin
# The real small weights that ship beside the project (no model hub here).
export SCENESCRIBE_MODEL_DIR ?= $(SHARED)/models
export SCENESCRIBE_SHARED ?= $(SHARED)
# Hub off: an accidental download fails loudly instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_OFFLINE := 1

.PHONY: install demo test lint bench-shots clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch and torchvision pinned as a pair: this machine carries these wheels on disk.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[all,test]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/scenescribe run $(SHARED)/media/synthetic/synthetic_cuts_speech.mp4 --out out/demo
	$(BIN)/scenescribe export out/demo --format html
	$(BIN)/scenescribe export out/demo --format srt

test: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m mypy

bench-shots: install
	$(BIN)/python benchmarks/bench_shots.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
