# The two front-door commands (see README):
#   make tiny   - install into .venv and run the tiny preset end to end on the CPU
#   make test   - install into .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all
TARGET ?= eval_all

.PHONY: install tiny test test-all lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

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
