# malm-suite: the two commands of the README are `make repro` and `make test`.
# Both set up whatever is missing first (venv from requirements.txt; for tests also the local
# Slurm cluster from Debian packages), so a fresh machine needs nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
# DVC stage commands (`malm ...`, `jupyter ...`) and Slurm jobs find the venv's tools first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# -m expression for `make test`: CI runs everything but the slow and GPU tests.
TEST_MARKERS ?= not slow and not gpu
# Free disk (GB) a new venv needs before pip starts.
VENV_MIN_FREE_GB ?= 7

.PHONY: setup repro check converge smoke test test-all cluster cluster-stop browser bench lab clean-runs

setup: $(VENV)/.installed

# pip byte-compiles the venv (about 25 s). Keep it: with PYTHONDONTWRITEBYTECODE=1 (set on this
# machine) Python never caches what it compiles, and every stage would pay ~7 s of imports again.
# A new venv takes about 6.5 GB (torch 2.14.1 is a CUDA build: 3.2 GB of nvidia libraries), so a
# nearly full disk fails here, with the figure, rather than midway through pip.
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || { free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free" -lt $(VENV_MIN_FREE_GB) ]; then \
	    echo "make setup: a new $(VENV) needs about 7 GB of disk; $$free GB free on $$(df -P . | awk 'NR==2 {print $$6}') (VENV_MIN_FREE_GB=$(VENV_MIN_FREE_GB))" >&2; \
	    exit 1; fi; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

## Main job: the whole default pipeline (synthetic data; H-T, T-Food, the baseline, the three
## component ablations and MALM, 3 seeds each, two runs side by side; tables, figures, the report).
repro: setup
	dvc repro

## The regression check, after `make repro`: results/ against expected/default.csv (each row's
## seed-mean within its tolerance; README "Expected results"). Exits 1 on a regression or a missing
## row. After an intended change: $(PY) -m malm.cli check-results results --write --note '...'
check: setup
	$(PY) -m malm.cli check-results results --expected expected/default.csv

## The converge profile (configs/converge.yaml, README "The converge profile"): every variant x seed
## of params.yaml trained for a fixed 20 epochs (no early stop; pipeline.workers runs side by side),
## embedded and evaluated from its best
## validation checkpoint, tables and figures; all of it under converge/. Set-up as
## `make repro`: the venv, then the pipeline's data and CLIP stand-in (`dvc repro` of those two
## stages: nothing to do when they are up to date). Re-running resumes and skips finished runs.
## Options: make converge CONVERGE_ARGS="--variants baseline,malm --seeds 0 train.patience=3"
CONVERGE_ARGS ?=
converge: setup
	dvc repro prepare pretrain
	$(PY) -m malm.cli converge --config params.yaml --config configs/converge.yaml $(CONVERGE_ARGS)

## The local single-node Slurm cluster (munge, slurmdbd+MariaDB, slurmctld, slurmd).
cluster:
	bash slurm/cluster.sh start

cluster-stop:
	bash slurm/cluster.sh stop

## Headless Chromium + chromedriver for the browser test of `malm serve` (Debian packages; idempotent).
browser:
	bash scripts/install_browser.sh

## Tests (CI): everything but slow/GPU tests; the Slurm tests run against the real local cluster,
## the browser test against the system Chromium.
test: setup cluster browser
	$(PY) -m pytest -m "$(TEST_MARKERS)"

test-all: TEST_MARKERS = not gpu
test-all: test

bench: setup
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_train_step.py

lab: setup
	$(VENV)/bin/jupyter lab notebooks/
