# Two commands on a fresh machine: `make run` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
CONFIG ?= conf/router.yaml

.PHONY: run test lint format bench check clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/webhook-router run -c $(CONFIG)

check: $(VENV)/.installed
	$(VENV)/bin/webhook-router check -c $(CONFIG)

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check router tests bench
	$(VENV)/bin/ruff format --check router tests bench

format: $(VENV)/.installed
	$(VENV)/bin/ruff format router tests bench
	$(VENV)/bin/ruff check --fix router tests bench

bench: $(VENV)/.installed
	$(PY) bench/bench_filter.py
	$(PY) bench/bench_journal.py
	$(PY) bench/bench_delivery.py
	$(PY) bench/bench_scale.py

clean:
	rm -rf $(VENV) var *.egg-info .pytest_cache

# Ten minutes of mixed traffic with kill -9 every few seconds; SOAK_SECONDS=60 for a short one.
.PHONY: soak
soak: $(VENV)/.installed
	nice $(PY) bench/soak.py
