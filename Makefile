# Two commands: `make run` (main job) and `make test` (test suite). Both create the
# virtual environment on first use. PYTHON must be Python 3.11 or newer.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/latest
STAMP  := $(VENV)/.installed

.PHONY: run test test-integration test-slow lint bench bench-ablation bench-speed bench-cifar bench-onnx-gap bench-decision benchmark-all benchmark-mnist benchmark-cifar10 clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "osrkit needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/osrkit run --out $(OUT) --overwrite

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-integration: $(STAMP)  # the notebook, README blocks, report in Chromium, 2-process training
	$(BIN)/python -m pytest -m integration

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/seed_run.py

bench-ablation: $(STAMP)
	$(BIN)/python benchmarks/ablation.py

bench-speed: $(STAMP)
	$(BIN)/osrkit perf speed --compare-training --compile --out benchmarks/results

bench-cifar: $(STAMP)
	$(BIN)/python benchmarks/cifar_split0.py

bench-onnx-gap: $(STAMP)
	$(BIN)/python benchmarks/onnx_gap.py

bench-decision: $(STAMP)  # after benchmark-all and bench-cifar: one table from their results
	$(BIN)/python benchmarks/decision_table.py

benchmark-all: $(STAMP)  # every protocol: the MNIST ones (~45 min on 2 AMD cores) and the colour ones (longer)
	$(BIN)/osrkit protocol all --out benchmarks/results

benchmark-mnist: $(STAMP)
	$(BIN)/osrkit protocol mnist --out benchmarks/results

benchmark-cifar10: $(STAMP)
	$(BIN)/osrkit protocol cifar10 --budget 0.4 --out benchmarks/results

clean:
	rm -rf $(VENV) runs build src/*.egg-info
