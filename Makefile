# Two commands: `make run` (main job) and `make test` (test suite). Both create the
# virtual environment on first use; `make install` only creates it. `make notebook` opens
# the quick-start notebook in JupyterLab, `make docs` builds the documentation site.
# PYTHON must be Python 3.11 or newer.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/latest
STAMP  := $(VENV)/.installed
NOTEBOOK_STAMP := $(VENV)/.notebook-installed
LINTED := src tests benchmarks notebooks/render.py

.PHONY: install run test notebook docs docs-notebook test-integration test-slow lint bench bench-ablation bench-speed bench-cifar bench-onnx-gap bench-decision benchmark-all benchmark-mnist benchmark-cifar10 clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "osrkit needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  # set up only: .venv with osrkit (editable) and the dev extra

run: $(STAMP)
	$(BIN)/osrkit run --out $(OUT) --overwrite

test: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-integration: $(STAMP)  # the notebook, README and docs blocks, the docs build, report in Chromium, 2-process training
	$(BIN)/python -m pytest -m integration

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports

$(NOTEBOOK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[notebook]"
	touch $(NOTEBOOK_STAMP)

# JupyterLab on this machine only (127.0.0.1); it prints the URL to open. Root (as in a
# container) needs --allow-root.
notebook: $(NOTEBOOK_STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) \
		notebooks/quickstart.ipynb

docs: $(STAMP)  # the site, warnings as errors, into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-notebook: $(STAMP)  # runs the notebook in full (minutes), writes docs/notebook.md + notebook_files/
	$(BIN)/python notebooks/render.py

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
	rm -rf $(VENV) runs build site src/*.egg-info
