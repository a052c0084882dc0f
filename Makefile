# Two commands on a fresh machine:
#   make run    start MariaDB + Redis if needed, migrate, seed, serve the demo
#   make test   start MariaDB + Redis if needed, run every test
SHELL := bash
CARGO ?= cargo
export CARGO
# cargo's target directory, as cargo resolves it (CARGO_TARGET_DIR honoured).
TARGET_DIR = $(shell bash docker/target-dir.sh)

.PHONY: help services test unit-tests chaos-short schemathesis chaos run lab fmt lint build release debug-bins

help:
	@echo "make run       serve the demo on http://127.0.0.1:8080 (MariaDB + Redis started if needed)"
	@echo "make test      run the whole test suite on real MariaDB + Redis"
	@echo "make lab       run the concurrency lab (release build), results in target/lab/"
	@echo "make chaos     the long chaos suite: faults against 3 app processes (release build)"
	@echo "make schemathesis  property-based API tests of the OpenAPI document (every check)"
	@echo "make services  make DATABASE_URL and REDIS_URL answer (reuse, start or install)"
	@echo "make fmt       format the code"
	@echo "make lint      rustfmt check + clippy -D warnings"

services:
	@bash docker/services.sh

build:
	$(CARGO) build --workspace --all-targets

# app and lab are built together so their dependencies are compiled once
# with the same features (make run, then make lab, reuses the build).
release:
	$(CARGO) build --release -p concert-app -p concert-lab

# Every test: the unit and integration tests (cargo test), then the short
# chaos pass (one of each fault against 3 app processes, its own MariaDB and
# Redis) and schemathesis against the served OpenAPI document. The line
# after the cargo tests sums up all test binaries ("N passed, N failed").
test: services unit-tests chaos-short schemathesis

unit-tests:
	@mkdir -p "$(TARGET_DIR)"
	@set -o pipefail; $(CARGO) test --workspace --no-fail-fast 2>&1 | tee "$(TARGET_DIR)/test-output.log"; \
	status=$$?; \
	awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "%d passed, %d failed\n", passed, failed }' "$(TARGET_DIR)/test-output.log"; \
	if [ $$status -ne 0 ]; then echo "why they failed (the full output is in $(TARGET_DIR)/test-output.log):"; \
	grep -A3 "panicked at" "$(TARGET_DIR)/test-output.log" | head -60; fi; \
	exit $$status

# The debug binaries the process-level suites start.
debug-bins:
	$(CARGO) build -p concert-app -p concert-lab

chaos-short: services debug-bins
	"$(TARGET_DIR)/debug/lab" chaos --short --app "$(TARGET_DIR)/debug/app" --out "$(TARGET_DIR)/chaos-short"

# SCHEMATHESIS_SECONDS bounds the run (default 90).
schemathesis: services debug-bins
	bash docker/schemathesis.sh "$(TARGET_DIR)/debug/app" "$(TARGET_DIR)/schemathesis-venv" $(or $(SCHEMATHESIS_SECONDS),90)

chaos: services release
	"$(TARGET_DIR)/release/lab" chaos --app "$(TARGET_DIR)/release/app" --out "$(TARGET_DIR)/chaos" $(CHAOS_ARGS)

run: services release
	@APP_BIN="$(TARGET_DIR)/release/app" bash docker/run.sh

lab: services release
	"$(TARGET_DIR)/release/lab" $(LAB_ARGS)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
