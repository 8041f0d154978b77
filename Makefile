# Everything runs from a virtualenv at .venv, created and kept in step with pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
export PORT

.PHONY: run test setup install services lint format typecheck migrations-check bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	@echo "Installing dependencies (the first install compiles quickfix: about 7 minutes)"
	$(PY) -m pip install -q -e ".[dev,fix]"
	$(PY) -m pip install -q --no-deps "coinbase-advanced-py>=1.8,<2"
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
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec $(VENV)/bin/honcho start -f Procfile

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
	$(VENV)/bin/mypy livermore marketdata brokerage alerts portfolio fix

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

bench: setup
	$(PY) tests/bench/run.py
