# Two commands do all the setup on a fresh machine (see README.md):
#   make pipeline [MIRROR=../shared/data/flashrag] [CORES=2]   -> results/pareto.pdf
#   make test                                                   -> the test suite (CI runs this)
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
MIRROR ?=
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup pipeline test lint clean
setup: $(VENV)/.routerr1-installed

# torch first, pinned: a looser requirement would pull a multi-GB CUDA build on CPU machines
$(VENV)/.routerr1-installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

pipeline: setup
	$(BIN)/snakemake --cores $(CORES) results/pareto.pdf $(if $(MIRROR),--config data_mirror=$(abspath $(MIRROR)))

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake
