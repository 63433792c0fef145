# tenantctl: `make demo` and `make test` work on a fresh Debian machine. Without a
# DATABASE_URL they start a throwaway PostgreSQL 15 under .tmp/ (installing Debian's
# postgresql package when initdb is missing) and stop it afterwards. `make test` also installs
# Debian's pgbouncer when it is missing, the parsers that check the CI reports
# (python3-prometheus-client, python3-lxml), and Citus (scripts/need-citus.sh).

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= $(HOME)/.cargo
BENCH_N ?= 100 1000
export CARGO_TERM_COLOR ?= never

.PHONY: all build release demo test unit lint bench install clean

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# The main job against a throwaway server (or against $DATABASE_URL when set).
demo: release
	@if [ -n "$$DATABASE_URL" ]; then scripts/demo.sh; else scripts/with-postgres.sh demo scripts/demo.sh; fi

# Formatting, lints, unit tests, and integration tests against a real server started here.
# tests/routing.rs runs PgBouncer in front of the test server: installed here when missing.
# tests/citus.rs runs a Citus coordinator and two workers (scripts/with-citus.sh): Citus is
# built from third_party/citus/ when missing, BEFORE any cluster starts (its build packages
# can upgrade postgresql-15 under a running server).
test: lint
	scripts/need-pgbouncer.sh >/dev/null
	scripts/need-report-checkers.sh
	scripts/need-citus.sh
	scripts/with-postgres.sh test scripts/with-citus.sh test $(CARGO) test --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# create / migrate / status over many tenants, against a raw-SQL floor; prints the ratios.
# Then create / migrate of BENCH_CITUS_N tenants on a Citus cluster (scripts/with-citus.sh,
# Citus built first when missing, as for make test) against plain PostgreSQL, and rebalance.
BENCH_CITUS_N ?= 50
bench: release
	scripts/need-citus.sh
	BENCH_N="$(BENCH_N)" BENCH_CITUS_N="$(BENCH_CITUS_N)" scripts/with-postgres.sh bench \
	  scripts/with-citus.sh bench scripts/bench.sh

install:
	$(CARGO) install --locked --path . --root $(PREFIX)

clean:
	$(CARGO) clean
	rm -rf .tmp
