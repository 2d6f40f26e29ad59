# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Embedded defaults: SQLite and files under ./data (or $$CLOUDPHONE_DATA_DIR), plain HTTP on
# 127.0.0.1:8080 (development mode), pushes written to the log instead of Apple/Google.
run: $(STAMP)
	$(BIN)/cloudphone db upgrade
	$(BIN)/cloudphone serve --development

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/sip_parse.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
