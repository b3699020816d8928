# metaproxy — the two commands of the README, and a few more.
#   make demo   set up, start the local stack, load sample data, query through metaproxy
#   make test   set up and run the whole test suite (lint, types, unit and integration tests)
#   make stop   stop every process of the local stack
#   make bench  every benchmark, each beside its baseline (bench-quick: a few minutes);
#               the last one restarts the stack with a simulated WAN link

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test unit lint stop bench bench-setup bench-quick clean

# metaproxy itself, and its development tooling (the local stack, the sample data, the demo)
# from devstack/
$(BIN)/.installed: pyproject.toml setup.py metaproxy/wire/_walk.c devstack/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]' -e ./devstack
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/python -m metaproxy_devstack.demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest -m unit

# (devstack/ on the path too: a venv set up before the development package existed still stops)
stop:
	@if [ -x $(BIN)/python ]; then PYTHONPATH=devstack $(BIN)/python -m metaproxy_devstack stack down; fi

bench-setup: setup
	$(BIN)/pip install -q -e '.[test,bench]' -e ./devstack

bench: bench-setup
	$(BIN)/python bench/bench_proxy.py
	$(BIN)/python bench/bench_gateway.py
	$(BIN)/python bench/bench_migrate.py
	$(BIN)/python bench/bench_wan.py

bench-quick: bench-setup
	$(BIN)/python bench/bench_proxy.py --quick
	$(BIN)/python bench/bench_gateway.py --quick
	$(BIN)/python bench/bench_migrate.py --rounds 2 --files 2
	$(BIN)/python bench/bench_wan.py --quick

clean: stop
	rm -rf .stack var
