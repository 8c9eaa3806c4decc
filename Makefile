# Two commands for a fresh checkout: `make demo` runs the product, `make test` its tests.
# Both create the virtual environment in .venv on first use (and again when the
# requirements change). Pass extra arguments with ARGS, e.g. make demo ARGS=--headless.

PYTHON_BIN ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON_BIN) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) manage.py demo $(ARGS)

test: $(STAMP)
	$(PYTHON) -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PYTHON) benchmarks/data_load.py $(ARGS)

clean:
	rm -rf var staticfiles
