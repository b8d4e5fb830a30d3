# Two commands a newcomer needs: `make run` (the default experiment + report) and `make test`.
# Both create the virtual environment first. TORCH is pinned to the CPU build these machines carry;
# on a GPU machine use e.g. `make run TORCH="torch>=2.4,<2.15"`. --no-compile: pip byte-compiles every file it
# installs (80 s of a fresh install here, most of it modules no job imports); Python compiles what it imports, once.
# `make test` runs two streams (tests/conftest.py): the SLURM test beside the rest of the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
CORES ?= all

.PHONY: install run quick test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --upgrade pip
	$(PY) -m pip install -q --no-compile "$(TORCH)"
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	touch $@

run: install
	$(VENV)/bin/snakemake --cores $(CORES)
	$(VENV)/bin/snakemake --cores $(CORES) --report results/default/report.html
	@echo "Report: results/default/report.html  Table: results/default/eval/summary.md"

quick: install
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/experiments/quick.yaml
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/experiments/quick.yaml --report results/quick/report.html

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -n 2

clean:
	rm -rf results data/processed .snakemake
