# Two commands on a fresh machine: `make run` (demo) and `make test` (whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

run: $(STAMP)
	$(BIN)/choreo demo

lint: $(STAMP)
	$(BIN)/ruff check src services tests bench
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest

# Every scenario on one broker; prints a table, writes bench/results/latest.json, and ends with
# one JSON line of headline figures. Not part of `make test`: benchmarks print, they never assert.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .choreo .pytest_cache .mypy_cache .ruff_cache
