# metaproxy — the two commands of the README, and a few more.
#   make demo   set up, start the local stack, load sample data, query through metaproxy
#   make test   set up and run the whole test suite (lint, types, unit and integration tests) on
#               Hive Metastore 4.0, then the tests marked compat on 2.3 and on 3.1
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

# the Hive Metastore versions the compat tests also run on (each run replaces the stack of the
# run before); every run goes on when one fails, and the target fails if any did
COMPAT_HMS ?= 2.3 3.1

test: lint
	@failed=""; \
	echo "== the whole suite on Hive Metastore 4.0"; \
	METAPROXY_HMS=4.0 $(BIN)/pytest || failed="$$failed 4.0"; \
	for v in $(COMPAT_HMS); do \
		echo "== the compat tests on Hive Metastore $$v"; \
		METAPROXY_HMS=$$v $(BIN)/pytest -m compat || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: failed on Hive Metastore$$failed"; exit 1; fi

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
	$(BIN)/python bench/bench_cluster.py
	$(BIN)/python bench/bench_wan.py

bench-quick: bench-setup
	$(BIN)/python bench/bench_proxy.py --quick
	$(BIN)/python bench/bench_gateway.py --quick
	$(BIN)/python bench/bench_migrate.py --rounds 2 --files 2
	$(BIN)/python bench/bench_cluster.py --quick
	$(BIN)/python bench/bench_wan.py --quick

clean: stop
	rm -rf .stack var
