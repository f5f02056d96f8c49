# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml devkit/pyproject.toml requirements.lock | sha1sum | cut -c1-12)
# uv resolves the lock files; pinned so that `make lock` gives the same output everywhere.
UV_VERSION := 0.13.8
# Floors of the unit-only line coverage checked by `make test` (issue 12): the service package
# as a whole, and its pure core (the partition ledger and the decision core of one command).
COVERAGE_PACKAGE := 80
COVERAGE_CORE := 95
CORE_MODULES := bridge/ledger.py,bridge/decision/*

.PHONY: install demo test lint typecheck tools unit integration bench bench-quick chaos schemas lock clean

# The runtime dependencies come from the hash-checked lock (as in the image), then the project
# itself, the dev tools (test, lint) and the devkit (simulator, local broker, demo, harness) on top.
$(STAMP): pyproject.toml devkit/pyproject.toml requirements.lock
	@echo "==> creating $(VENV) and installing the project with its dev dependencies"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q -e '.[dev]' -e ./devkit
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

## The bridge end to end on embedded defaults: local Kafka broker + Norce API simulator.
demo: install
	$(BIN)/order-bridge-dev demo

## Everything CI checks: lint, types, tool provisioning, then every test (unit, broker, deploy).
## The unit tests run first, alone (no broker), and print the service package's line coverage;
## `coverage-check` fails below the floors. Then the broker and deployment tests.
test: install lint typecheck tools
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit --cov=bridge --cov-report=term
	@echo "==> unit coverage of the pure core ($(CORE_MODULES)), floor $(COVERAGE_CORE) %"
	$(BIN)/python -m coverage report --include='$(CORE_MODULES)' --fail-under=$(COVERAGE_CORE)
	@$(BIN)/python -m coverage report --fail-under=$(COVERAGE_PACKAGE) >/dev/null \
		&& echo "==> unit coverage of bridge/ is at least $(COVERAGE_PACKAGE) %" \
		|| { echo "unit coverage of bridge/ is below $(COVERAGE_PACKAGE) %"; exit 1; }
	$(BIN)/python -m pytest -p no:cacheprovider tests/integration tests/deploy

## ruff, and the import contracts: the service imports no development tooling (pyproject.toml).
lint: install
	$(BIN)/ruff check bridge devkit tests bench
	$(BIN)/ruff format --check bridge devkit tests bench
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

tools:
	bash scripts/install-tools.sh

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

## Regenerate the command JSON Schema; bridge/schemas/ is the source, schemas/ a copy for readers.
schemas: install
	$(BIN)/order-bridge schema --write bridge/schemas/order-command.schema.json
	cp bridge/schemas/*.avsc bridge/schemas/*.json schemas/

## Re-resolve the pinned, hash-checked lock files after changing dependencies in pyproject.toml
## (existing pins are kept where they still fit; LOCK_FLAGS=--upgrade takes the newest). The
## runtime lock includes the `otel` extra, so the image can trace when BRIDGE_OTEL__* asks for it.
lock: install
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip compile -q pyproject.toml --extra otel --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" $(LOCK_FLAGS) -o requirements.lock
	$(BIN)/uv pip compile -q requirements-build.in --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command "make lock" $(LOCK_FLAGS) -o requirements-build.lock

bench: install
	$(BIN)/python bench/throughput.py

bench-quick: install
	$(BIN)/python bench/throughput.py --quick

## Fault injection and write fencing (bench/README.md); e.g. make chaos CHAOS_ARGS="--seed 42 --short"
chaos: install
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
