# Two commands for a fresh checkout: `make demo` runs the product, `make test` its tests.
# Both create the virtual environment in .venv on first use (and again when the
# requirements change). Pass extra arguments with ARGS, e.g. make demo ARGS=--headless.

PYTHON_BIN ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench bench-secagg clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON_BIN) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) manage.py demo $(ARGS)

test: $(STAMP)
	$(PYTHON) -m pytest $(ARGS)

# The unit tests of the Django-free cores (turbofan, federation.core): under a minute.
test-fast: $(STAMP)
	$(PYTHON) -m pytest tests/core $(ARGS)

# Style, types (mypy with django-stubs) and the layer rules (import-linter, in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy turbofan federation dashboard worker config benchmarks tests
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PYTHON) benchmarks/data_load.py $(ARGS)

# Our secure aggregation against Flower's SecAgg+, in one run. Flower is a benchmark-only
# dependency: it goes into its own environment, .venv-bench, never into .venv.
BENCH_VENV ?= .venv-bench
BENCH_PYTHON := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): requirements.txt requirements-bench.txt
	$(PYTHON_BIN) -m venv $(BENCH_VENV)
	$(BENCH_PYTHON) -m pip install --quiet -r requirements.txt -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench-secagg: $(BENCH_STAMP)
	$(BENCH_PYTHON) benchmarks/secagg.py $(ARGS)

clean:
	rm -rf var staticfiles
