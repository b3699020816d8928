# metaproxy — the two commands of the README, and a few more.
#   make demo   set up, start the local stack, load sample data, query through metaproxy
#   make test   set up and run the whole test suite (lint, types, unit and integration tests) on
#               Hive Metastore 4.0, then the tests marked state with metaproxy's state on
#               PostgreSQL, the tests marked compat on 2.3 and on 3.1, then the tests marked
#               secure on the secure stack (Kerberos, TLS)
#   make setup-secure  what the secure stack needs besides: MIT Kerberos (Debian packages) and
#               the kerberos extra (gssapi, requests-gssapi)
#   make setup-postgres  the PostgreSQL server (Debian's package) for a shared state
#   make stop   stop every process of the local stack
#   make bench  every benchmark, each beside its baseline (bench-quick: a few minutes);
#               the last one restarts the stack with a simulated WAN link

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-secure setup-postgres demo test unit lint stop bench bench-setup bench-quick clean

# metaproxy itself, and its development tooling (the local stack, the sample data, the demo)
# from devstack/
$(BIN)/.installed: pyproject.toml setup.py metaproxy/wire/_walk.c devstack/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]' -e ./devstack
	touch $@

setup: $(BIN)/.installed

# the secure stack's KDC, kinit and the headers gssapi builds with, from Debian's packages
# (installed when missing; apt-get needs root, or sudo)
KRB5_PACKAGES = krb5-kdc krb5-admin-server krb5-user libkrb5-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/.installed-secure: $(BIN)/.installed pyproject.toml
	@if ! { [ -x /usr/sbin/krb5kdc ] && [ -x /usr/sbin/kadmin.local ] && [ -x /usr/bin/kinit ] \
		&& [ -x /usr/bin/krb5-config ]; }; then \
		echo "installing MIT Kerberos: $(KRB5_PACKAGES)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(KRB5_PACKAGES); \
	fi
	$(BIN)/pip install -q -e '.[test,kerberos]' -e ./devstack
	touch $@

setup-secure: $(BIN)/.installed-secure

# the PostgreSQL server a shared state runs on (stack up --state postgres; the state tests start
# one of their own), from Debian's packages when missing
setup-postgres:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v postgres >/dev/null; then \
		echo "installing PostgreSQL: postgresql"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; \
	fi

demo: setup
	$(BIN)/python -m metaproxy_devstack.demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# the Hive Metastore versions the compat tests also run on (each run replaces the stack of the
# run before); every run goes on when one fails, and the target fails if any did
COMPAT_HMS ?= 2.3 3.1

test: lint setup-secure setup-postgres
	@failed=""; \
	echo "== the whole suite on Hive Metastore 4.0"; \
	METAPROXY_HMS=4.0 $(BIN)/pytest --durations=15 || failed="$$failed 4.0"; \
	echo "== the state, proxy and migration suites with metaproxy's state on PostgreSQL"; \
	METAPROXY_HMS=4.0 METAPROXY_STATE=postgres $(BIN)/pytest -m state || failed="$$failed 4.0-postgres"; \
	for v in $(COMPAT_HMS); do \
		echo "== the compat tests on Hive Metastore $$v"; \
		METAPROXY_HMS=$$v $(BIN)/pytest -m compat || failed="$$failed $$v"; \
	done; \
	echo "== the secure tests on the secure stack (Kerberos, TLS)"; \
	METAPROXY_SECURE=1 $(BIN)/pytest -m secure || failed="$$failed 4.0-secure"; \
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
