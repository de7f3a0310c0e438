# One command each: `make run` (the example app) and `make test` (the suite).
# Both create .venv and install the project into it on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint typing docs bench check clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "flask-ploy needs Python 3.10 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	@echo "Example app on http://$(HOST):$(PORT)/ with the embedded defaults"
	@echo "(memory:// cache, SQLite state in example_app/instance)."
	@echo "Next step, a shared Redis cache:"
	@echo "  PLOY_CACHE_URL=redis://127.0.0.1:6379/0 make run"
	$(BIN)/flask --app example_app run --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check flask_ploy tests example_app bench
	$(BIN)/ruff format --check flask_ploy

typing: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/sphinx-build -W -q -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

check: lint typing test docs

clean:
	rm -rf $(VENV) docs/_build .mypy_cache .ruff_cache
