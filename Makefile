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
	@echo "                 (PROFILE=quick|default|nm|transformer|cifar10|imagenet, RESUME=1 continues, DRY_RUN=1 lists;"
	@echo "                 default: 345 jobs, the N:M grids included; nm: those 95 alone; transformer: 65 jobs)"
	@echo "make publish     copy the reproduction of PROFILE into results/runs and regenerate the report"
	@echo "                 (a replaced record is kept in results/superseded/; prints added/replaced/unchanged)"
	@echo "make report      results/REPORT.md from the published records (results/runs)"
	@echo "make lint        ruff check + format check"
	@echo "make test-all    also the slow tests"
	@echo "make bench       python -m suite.bench profile=\$$(PROFILE)"
	@echo "make asv | asv-history N=20 | asv-publish | asv-compare A=<sha> B=<sha> | asv-check"
	@echo "make perf-compare BASE=<rev> [THRESHOLD=5]   instruction counts of BASE vs HEAD, exit 1 on growth"
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
# commit into it. Results are stored under a machine name derived from the CPU
# (suite.machine.identity(), e.g. amd-f25m17-avx512-2c; ASV_MACHINE=... overrides it), and
# machine.json carries cpu, arch, num_cpu, ram and os. asv-check (CI) runs in $(VENV) itself
# (--python=same): it checks this checkout and saves nothing. ASV_PROFILE sizes the runs (the
# profile group's asv: keys). Instruction counts (bench_counts.py) come from one valgrind
# process per commit.
ASV := $(PY) -m asv
# Derived once, when a recipe first needs it (after `install`): $(eval) caches the value.
ASV_MACHINE ?= $(eval ASV_MACHINE := $(shell $(PY) -m suite.asv_machine --name))$(ASV_MACHINE)
ASV_PROFILE ?= quick
N ?= 20
A ?= HEAD~1
B ?= HEAD
FACTOR ?= 1.1
ASV_BENCH ?=
ASV_BENCH_ARGS := $(foreach b,$(ASV_BENCH),--bench "$(b)")
ASV_RUN = SRIGL_ASV_PROFILE=$(ASV_PROFILE) $(ASV) run --machine $(ASV_MACHINE) --show-stderr
ASV_HASHES := .asv/history-hashes.txt
# CI smoke: each benchmark class once, on one parameter set (asv matches "name(params)").
ASV_SMOKE := --bench "LayerForward\.time_forward\(.*'vit_b16_fc2_3072x768', 0\.9, 1\)" \
	--bench "LayerRatio\.track_ratio_vs_dense\(.*'vit_b16_fc2_3072x768', 0\.9, 1\)" \
	--bench "WholeModel(Forward|Memory)\.\w+\('(dense|naive)'\)" \
	--bench "WholeModelRatio\.track_ratio_vs_dense\('vit', 'naive'\)" \
	--bench "TrainingStep\.time_step\('srigl'\)" \
	--bench "TopologyUpdate\.time_step\('srigl', True\)" \
	--bench "DigitsAccuracy\.track_top1_error\('srigl', 0\.9\)" \
	--bench "FusedRatio\.track_ratio_fused_vs_dense\('vit_b16_fc2_3072x768', 0\.9, 1\)" \
	--bench "InstructionCount\.track_instructions\('smoke'\)"

.PHONY: asv asv-machine asv-history asv-publish asv-compare asv-check perf-compare

# (asv machine --yes stores only values that differ from its defaults; --complete adds the rest)
asv-machine: install        # record ASV_MACHINE (cpu, arch, num_cpu, ram, os) in ~/.asv-machine.json
	$(ASV) machine --yes --machine $(ASV_MACHINE) $(shell $(PY) -m suite.asv_machine --args)
	$(PY) -m suite.asv_machine --complete $(ASV_MACHINE)

asv: asv-machine            # benchmark HEAD (its committed code) -> results/asv/<machine>/
	$(ASV_RUN) --durations 8 $(ASV_BENCH_ARGS) HEAD^!

asv-history: asv-machine    # the last N first-parent commits of main, skipping recorded ones
	@mkdir -p $(dir $(ASV_HASHES))
	git rev-list --first-parent -n $(N) main > $(ASV_HASHES)
	$(ASV_RUN) --skip-existing-commits $(ASV_BENCH_ARGS) HASHFILE:$(ASV_HASHES)

asv-publish: install        # results/asv/html (offline) + results/ASV.md + figures/asv_history_*.png
	$(ASV) publish
	$(PY) -m suite.asv_offline $(ASV_HTML)
	$(PY) -m suite.asv_summary

asv-compare: install        # regressions/improvements between commits A and B (factor FACTOR)
	$(ASV) compare --machine $(ASV_MACHINE) --factor $(FACTOR) --split --only-changed $(A) $(B)

asv-check: asv-machine      # CI: asv check + a --quick pass of one parameter set per class
	$(ASV) check --python=same
	SRIGL_ASV_COUNTS='^smoke$$' $(ASV_RUN) --python=same --quick $(ASV_SMOKE) $(ASV_BENCH_ARGS)

# Instruction counts of BASE and the checked-out HEAD commit (one valgrind process each, each
# from a temporary git worktree, both with $(VENV)'s Python; counts cached per tree); exit 1
# when a count grew by more than THRESHOLD percent. PERF_CASES=regex limits the cases (default:
# all; about 5 CPU-minutes per side on 2 cores).
ASV_HTML := results/asv/html
BASE ?= HEAD~1
THRESHOLD ?= 5
PERF_CASES ?=
perf-compare: install
	$(PY) -m suite.perf_compare --base $(BASE) --threshold $(THRESHOLD) $(if $(PERF_CASES),--cases "$(PERF_CASES)")

# --- GPU check (issue 6): run on a lent GPU machine with its own Python; no install, no Hydra --
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= results/gpu_check.md
GPU_CHECK_ARGS ?=

.PHONY: gpu-check

gpu-check:                  # GPU tests, fused(Triton)/dense/CSR timings, ResNet-18 AMP steps (<4 min)
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) scripts/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)
