# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install demo test lint typecheck tools unit integration bench bench-quick chaos schemas clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing the project with its dev dependencies"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

## The bridge end to end on embedded defaults: local Kafka broker + Norce API simulator.
demo: install
	$(BIN)/order-bridge demo

## Everything CI checks: lint, types, tool provisioning, then every test (unit, broker, deploy).
test: install lint typecheck tools
	$(BIN)/python -m pytest -p no:cacheprovider

lint: install
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench

typecheck: install
	$(BIN)/mypy

tools:
	bash scripts/install-tools.sh

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

schemas: install
	$(BIN)/order-bridge schema --write

bench: install
	$(BIN)/python bench/throughput.py

bench-quick: install
	$(BIN)/python bench/throughput.py --quick

## Fault injection and write fencing (bench/README.md); e.g. make chaos CHAOS_ARGS="--seed 42 --short"
chaos: install
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
