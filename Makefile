# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make demo   a real backfill with a progress bar, then the admin to look at
#   make test   lint, type checks and the test suite (real Temporal, real PostgreSQL)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: demo test test-fast chaos lint format install install-dev clean bench-pause

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

demo: install
	$(PY) -m example.demo

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# mypy loads tests.settings; a placeholder DATABASE_URL keeps it from starting a database.
	DATABASE_URL=$${DATABASE_URL:-sqlite://:memory:} $(BIN)/mypy .
	$(PY) manage.py check --fail-level WARNING
	$(PY) manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=tests.settings DATABASE_URL=$${DATABASE_URL:-sqlite://:memory:} \
		$(PY) manage.py makemigrations --check --dry-run

# Without DATABASE_URL the tests start a throwaway PostgreSQL themselves.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the slow chaos tests (which kill real worker processes).
test-fast: install-dev
	$(PY) -m pytest -m "not chaos" $(PYTEST_ARGS)

chaos: install-dev
	$(PY) -m pytest -m chaos $(PYTEST_ARGS)

# Pause latency with the default settings (PostgreSQL from DATABASE_URL, or a throwaway one).
bench-pause: install-dev
	$(PY) -m bench.pause_latency

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
