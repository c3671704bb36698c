# Two commands for a fresh machine:  `make demo` (main job on the bundled default) and `make test` (full suite).
# Both create .venv if it is missing. torch is pinned in the same pip command as the project, so pip takes the
# local CPU wheel instead of resolving a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint install bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/pip install -q $(TORCH_PIN) -e '.[train,dev,deepspeed]'
	touch $@

install: $(BIN)/.installed

lint: $(BIN)/.installed
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -n 2 --durations=15 tests

demo: $(BIN)/.installed
	bash scripts/demo.sh

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_mixture.py
	$(BIN)/python bench/bench_sft.py
	$(BIN)/python bench/bench_pref.py

clean:
	rm -rf out runs .pytest_cache
