# srigl-bench: every target sets itself up on a fresh machine (a .venv with Python 3.11 + pip).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.srigl-bench-installed
# Members of the Hydra profile/ group: quick | default | cifar10 | imagenet
PROFILE ?= default
DRY_RUN ?= 0
PYTEST_ARGS ?=

.PHONY: install test test-all lint format reproduce publish bench report clean help

help:
	@echo "make test        install into $(VENV) if needed, run the CPU test-suite"
	@echo "make reproduce   install, retrain the profile into results/reproduction/, compare with the"
	@echo "                 published results/runs: results/REPRODUCTION.md, exit 1 if a cell differs"
	@echo "                 (PROFILE=quick|default|cifar10|imagenet, RESUME=1 continues, DRY_RUN=1 lists)"
	@echo "make publish     copy the reproduction of PROFILE into results/runs and regenerate the report"
	@echo "make report      results/REPORT.md from the published records (results/runs)"
	@echo "make lint        ruff check + format check"
	@echo "make test-all    also the slow tests"
	@echo "make bench       python -m suite.bench profile=\$$(PROFILE)"
	@echo "make asv | asv-history N=20 | asv-publish | asv-compare A=<sha> B=<sha> | asv-check"
	@echo "make gpu-check   on a GPU machine: GPU tests, Triton kernel timings, AMP training"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch/torchvision first, by exact version, so pip takes the local wheels (see README).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade "pip==24.3.1"
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Reproduction, not regeneration: trains the profile into a fresh results/reproduction/$(PROFILE)/,
# benches again, compares with results/runs (results/REPRODUCTION.md; exit 1 when a cell differs).
# RESUME=1 continues an interrupted reproduction. results/runs changes only with `make publish`.
RESUME ?= 0
REPRODUCE_ARGS ?=
reproduce: install
	$(PY) -m suite.reproduce profile=$(PROFILE) dry_run=$(DRY_RUN) resume=$(RESUME) $(REPRODUCE_ARGS)

publish: install            # copy the finished reproduction into results/runs, regenerate the report
	$(PY) -m suite.reproduce profile=$(PROFILE) publish=1

bench: install
	$(PY) -m suite.bench profile=$(PROFILE)

report: install             # results/REPORT.md, figures/, tables/ from the published records
	$(PY) -m suite.report

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache outputs multirun

# --- asv: speed and accuracy history (suite/asv_benchmarks, asv.conf.json) --------------------
# asv builds its own virtualenv under .asv/env (Python 3.11 with torch/torchvision from the
# config's matrix, installed once, by the same pip configuration as $(VENV)) and installs each
# commit into it. Results are stored under the fixed machine name ASV_MACHINE. asv-check (CI)
# runs in $(VENV) itself (--python=same): it checks this checkout and saves nothing.
# ASV_PROFILE sizes the runs (the profile group's asv: keys).
ASV := $(PY) -m asv
ASV_MACHINE ?= srigl-bench-2core
ASV_PROFILE ?= quick
N ?= 20
A ?= HEAD~1
B ?= HEAD
FACTOR ?= 1.1
ASV_BENCH ?=
ASV_BENCH_ARGS := $(foreach b,$(ASV_BENCH),--bench "$(b)")
ASV_RUN := SRIGL_ASV_PROFILE=$(ASV_PROFILE) $(ASV) run --machine $(ASV_MACHINE) --show-stderr
ASV_HASHES := .asv/history-hashes.txt
# CI smoke: each benchmark class once, on one parameter set (asv matches "name(params)").
ASV_SMOKE := --bench "LayerForward\.time_forward\(.*'vit_b16_fc2_3072x768', 0\.9, 1\)" \
	--bench "LayerRatio\.track_ratio_vs_dense\(.*'vit_b16_fc2_3072x768', 0\.9, 1\)" \
	--bench "WholeModel(Forward|Memory)\.\w+\('(dense|naive)'\)" \
	--bench "WholeModelRatio\.track_ratio_vs_dense\('vit', 'naive'\)" \
	--bench "TrainingStep\.time_step\('srigl'\)" \
	--bench "TopologyUpdate\.time_step\('srigl', True\)" \
	--bench "DigitsAccuracy\.track_top1_error\('srigl', 0\.9\)" \
	--bench "FusedRatio\.track_ratio_fused_vs_dense\('vit_b16_fc2_3072x768', 0\.9, 1\)"

.PHONY: asv asv-machine asv-history asv-publish asv-compare asv-check

asv-machine: install        # record ASV_MACHINE in ~/.asv-machine.json (no prompt)
	$(ASV) machine --yes --machine $(ASV_MACHINE)

asv: asv-machine            # benchmark HEAD (its committed code) -> results/asv/
	$(ASV_RUN) --durations 8 $(ASV_BENCH_ARGS) HEAD^!

asv-history: asv-machine    # the last N first-parent commits of main, skipping recorded ones
	@mkdir -p $(dir $(ASV_HASHES))
	git rev-list --first-parent -n $(N) main > $(ASV_HASHES)
	$(ASV_RUN) --skip-existing-commits $(ASV_BENCH_ARGS) HASHFILE:$(ASV_HASHES)

asv-publish: install        # results/asv/html + results/ASV.md + results/figures/asv_history.png
	$(ASV) publish
	$(PY) -m suite.asv_summary --machine $(ASV_MACHINE)

asv-compare: install        # regressions/improvements between commits A and B (factor FACTOR)
	$(ASV) compare --machine $(ASV_MACHINE) --factor $(FACTOR) --split --only-changed $(A) $(B)

asv-check: asv-machine      # CI: asv check + a --quick pass of one parameter set per class
	$(ASV) check --python=same
	$(ASV_RUN) --python=same --quick $(ASV_SMOKE) $(ASV_BENCH_ARGS)

# --- GPU check (issue 6): run on a lent GPU machine with its own Python; no install, no Hydra --
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= results/gpu_check.md
GPU_CHECK_ARGS ?=

.PHONY: gpu-check

gpu-check:                  # GPU tests, fused(Triton)/dense/CSR timings, ResNet-18 AMP steps (<4 min)
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) scripts/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)
