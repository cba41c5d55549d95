# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make demo   a real backfill with a progress bar, then the admin to look at
#   make test   lint, type checks and the test suite (real Temporal, real PostgreSQL)
#   make test-engines   the core suite on SQLite and MariaDB too (see below)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-engines chaos lint format install install-dev clean bench-pause bench

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
	# (In memory: a fresh checkout has no var/ for the example's SQLite file yet.)
	DATABASE_URL=$${DATABASE_URL:-sqlite://:memory:} $(PY) manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=tests.settings DATABASE_URL=$${DATABASE_URL:-sqlite://:memory:} \
		$(PY) manage.py makemigrations --check --dry-run

# Without DATABASE_URL the tests start a throwaway PostgreSQL themselves.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The core suite (keyset iteration, cursors, checkpoints and fencing, the workflow with an
# in-process worker, end-to-end with worker processes, and the crash tests) on SQLite and on
# MariaDB; `make test` runs everything on PostgreSQL. The SQLite test database is a file in
# /tmp; MariaDB's is `test_` + the URL's database name, made and dropped by the run. The MySQL
# driver (requirements-mariadb.txt) compiles: pkg-config, default-libmysqlclient-dev and gcc.
CORE_TESTS := tests/test_iteration.py tests/test_cursor.py tests/test_checkpoint.py tests/test_setbased.py \
	tests/test_temporal.py tests/test_end_to_end.py tests/test_crash.py
SQLITE_URL ?= sqlite:////tmp/backfills_ci.sqlite3
MARIADB_URL ?= mysql://root@127.0.0.1:3306/backfills_ci

$(VENV)/.mariadb: requirements-mariadb.txt | $(BIN)/python
	$(PY) -m pip install --quiet -r requirements-mariadb.txt
	touch $@

test-engines: install-dev $(VENV)/.mariadb
	DATABASE_URL=$(SQLITE_URL) $(PY) -m pytest $(CORE_TESTS) $(PYTEST_ARGS)
	DATABASE_URL=$(MARIADB_URL) $(PY) -m pytest $(CORE_TESTS) $(PYTEST_ARGS)

# Everything but the slow chaos tests (which kill real worker processes).
test-fast: install-dev
	$(PY) -m pytest -m "not chaos" $(PYTEST_ARGS)

chaos: install-dev
	$(PY) -m pytest -m chaos $(PYTEST_ARGS)

# Pause latency with the default settings (PostgreSQL from DATABASE_URL, or a throwaway one).
bench-pause: install-dev
	$(PY) -m bench.pause_latency

$(VENV)/.bench: requirements-bench.txt | $(BIN)/python
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

# Throughput of the full stack against hand-written baselines, with a chart:
# bench/results/throughput.{json,png}. `make bench ROWS=100000` for a quicker run.
ROWS ?= 1000000
bench: install-dev $(VENV)/.bench
	$(PY) -m bench.throughput --rows $(ROWS)

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
