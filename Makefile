# Everything runs from a virtualenv at .venv, created and kept in step with pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
export PORT

.PHONY: run test setup install services lint format typecheck migrations-check import-check check bench clean

# Coinbase's official client, a test dependency: tests/marketdata/test_coinbase_sdk.py proves with it
# that tests/fakes/coinbase.py speaks the real protocol. It pins websockets<14 for its legacy client,
# which would hold the whole project on websockets 13 (the stream tests use the 14+ client API), so it
# is installed without its dependencies (the rest of them, requests and backoff, are dev dependencies
# in pyproject.toml) and the test hands it the legacy client that websockets still ships.
COINBASE_SDK := "coinbase-advanced-py>=1.8.4,<2"

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	@echo "Installing dependencies (the first install compiles quickfix: about 7 minutes)"
	$(PY) -m pip install -q -e ".[dev,fix]"
	$(PY) -m pip install -q --no-deps $(COINBASE_SDK)
	touch $@

install: $(STAMP)

services:
	@scripts/services-up

setup: install services
	$(PY) manage.py createdb
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py seed

run: setup
	@echo ""
	@echo "Livermore is starting:"
	@echo "  admin        http://127.0.0.1:$(PORT)/admin/  (live quotes: /admin/marketdata/instrument/live/)"
	@echo "  REST API     http://127.0.0.1:$(PORT)/api/v1/  (docs: /api/v1/docs)"
	@echo "  WebSocket    ws://127.0.0.1:$(PORT)/ws/v1/stream"
	@echo "  health       http://127.0.0.1:$(PORT)/healthz  /readyz"
	@echo "Ctrl-C stops everything."
	@echo ""
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec $(PY) -m livermore.supervise -f Procfile

test: setup
	@scripts/chromium-ensure
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install
	$(VENV)/bin/mypy livermore kernel users marketdata brokerage alerts portfolio fix

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

# The dependency rule between apps, and pure modules free of Django ([tool.importlinter] in pyproject.toml).
import-check: install
	$(VENV)/bin/lint-imports

# What CI guards before the tests.
check: lint typecheck migrations-check import-check

bench: setup
	$(PY) tests/bench/run.py
