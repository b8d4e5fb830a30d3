# Two commands a newcomer needs: `make run` (the default experiment + report) and `make test`.
# Both create the virtual environment first. TORCH is pinned to the CPU build these machines carry;
# on a GPU machine use e.g. `make run TORCH="torch>=2.4,<2.15"`. pip byte-compiles what it installs
# (no --no-compile): with PYTHONDONTWRITEBYTECODE=1, as on these machines, a process that finds no
# .pyc compiles torch & co. again on each import; a fresh clone's suite without them ran 13:36, 8:00
# once they existed (the install was 80 s shorter).
# `make test` runs two streams (tests/conftest.py): the SLURM test beside the rest of the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
CORES ?= all

.PHONY: install run quick test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
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
