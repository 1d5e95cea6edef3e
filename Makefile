# The two front-door commands (see README):
#   make tiny   - install into .venv and run the tiny preset end to end on the CPU
#   make test   - install into .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all
TARGET ?= eval_all

.PHONY: install lock tiny test test-all lint gpu-rehearsal

# Every package at requirements.lock's exact version (make lock refreshes it), then exoflow
# itself, editable, without resolving anything else.
$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

lock:
	bash scripts/lock.sh

tiny: install
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/snakemake $(TARGET) --cores $(CORES) --configfile configs/tiny.yaml

test: lint
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest

test-all: lint
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -m ''

# Style and workflow checks (part of `make test`): ruff, snakefmt (the rule files), snakemake
# --lint, and a dry run of every shipped config (config.yaml; configs/tiny.yaml; tiny_hh.yaml,
# study.yaml and tiny_2proc.yaml over tiny.yaml; gpu_check.yaml).
SMK := $(VENV)/bin/snakemake
lint: install
	$(VENV)/bin/ruff check exoflow workflow_scripts tests benchmarks scripts
	$(VENV)/bin/snakefmt --check Snakefile rules
	$(SMK) --lint
	$(SMK) --lint --configfile configs/tiny.yaml
	$(SMK) eval_all -n --quiet all
	$(SMK) eval_all -n --quiet all --configfile configs/tiny.yaml
	$(SMK) eval_all -n --quiet all --configfile configs/tiny.yaml configs/tiny_hh.yaml
	$(SMK) study -n --quiet all --configfile configs/tiny.yaml configs/study.yaml
	$(SMK) eval_all -n --quiet all --configfile configs/tiny.yaml configs/tiny_2proc.yaml
	$(SMK) eval_all -n --quiet all --configfile configs/gpu_check.yaml

# The GPU check rehearsed on this CPU (after bash scripts/gpu_bundle.sh): the image's packages
# only, the bundle installed by the check itself, no network (scripts/gpu_rehearsal.sh).
gpu-rehearsal: install
	bash scripts/gpu_rehearsal.sh
