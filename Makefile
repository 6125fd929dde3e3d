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

# Every target of issue 7 against nginx (installed here if missing), medians of BENCH_RUNS runs;
# BENCH_ARGS=--quick for tiny sizes. About 7 minutes with 3 runs.
BENCH_RUNS ?= 3
bench: $(VENV)/.installed
	sh bench/install_nginx.sh
	$(PY) -m compileall -q router  # as an installed package has it (PYTHONDONTWRITEBYTECODE may be set)
	$(PY) bench/bench.py --runs $(BENCH_RUNS) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var *.egg-info .pytest_cache

# Ten minutes of mixed traffic with kill -9 every few seconds; SOAK_SECONDS=60 for a short one.
.PHONY: soak
soak: $(VENV)/.installed
	nice $(PY) bench/soak.py
