# One command each: `make run` (the example app) and `make test` (the suite).
# Both create .venv on first use; `make run` installs only what the app
# needs, `make test` everything the tests, lint, typing, docs and bench need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One stamp per install, so `make run` never pays for the test tools and
# `make test` after `make run` installs the rest.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
HOST   ?= 127.0.0.1
PORT   ?= 5000

.DEFAULT_GOAL := help
.PHONY: help run test suite lint typing docs bench screenshot dist clean

help:
	@echo "make run        the example app on http://$(HOST):$(PORT)/, in debug mode with the reloader"
	@echo "                (installs flask-ploy alone: Flask, redis-py, SQLAlchemy, PyYAML,"
	@echo "                asgiref for the async views, and gunicorn)"
	@echo "                PORT=8000 make run   another port (default 5000)"
	@echo "                HOST=0.0.0.0 ...     listen beyond this machine: the debugger runs code"
	@echo "                                     for whoever reaches it, so only on a trusted network"
	@echo "                FLASK_PLOY_CACHE_URL=redis://127.0.0.1:6379/0 make run   a shared Redis cache"
	@echo "                (PostgreSQL or MariaDB state: .venv/bin/pip install -e '.[postgres]' or '.[mysql]')"
	@echo "make test       the test suite, then style, mypy --strict and the docs build"
	@echo "                (installs .[dev]; what CI runs)"
	@echo "make suite      the test suite alone; PYTEST_ARGS='-k page' to choose"
	@echo "make lint | typing | docs | bench    style, mypy --strict, Sphinx, benchmarks"
	@echo "make screenshot rewrite docs/_static/example-page.png from the page in Chromium"
	@echo "make dist       build the sdist and wheel into dist/ and twine-check them"
	@echo "make clean      remove .venv and build output"

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "flask-ploy needs Python 3.10 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@# Editable installs from pyproject.toml need pip 21.3 (older 3.10 releases bundle 21.2).
	@$(BIN)/python -c 'import pip, sys; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))' \
		|| $(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[async]' gunicorn
	@touch $@

$(DEV_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	@echo "Example app on http://$(HOST):$(PORT)/ (debug mode: reloads when a file changes)."
	@echo "Another port: PORT=8000 make run. A shared Redis cache:"
	@echo "  FLASK_PLOY_CACHE_URL=redis://127.0.0.1:6379/0 make run"
	$(BIN)/flask --app example_app run --debug --host $(HOST) --port $(PORT)

# README's test command, and all that CI runs after starting the services.
test: suite lint typing docs

suite: $(DEV_STAMP)
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check flask_ploy tests example_app bench
	$(BIN)/ruff format --check flask_ploy

typing: $(DEV_STAMP)
	$(BIN)/mypy

docs: $(DEV_STAMP)
	$(BIN)/sphinx-build -W -q -b html docs docs/_build/html

bench: $(DEV_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

screenshot: $(DEV_STAMP)
	PLOY_SCREENSHOT=1 $(BIN)/pytest tests/test_example_app.py -k test_screenshot_for_the_docs
	PLOY_SCREENSHOT=1 $(BIN)/pytest tests/test_observe_toolbar.py

dist: $(DEV_STAMP)
	rm -rf dist
	$(BIN)/python -m build
	$(BIN)/twine check --strict dist/*


clean:
	rm -rf $(VENV) docs/_build .mypy_cache .ruff_cache build dist
