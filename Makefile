# Two commands on a fresh machine:
#   make run    start MariaDB + Redis if needed, migrate, seed, serve the demo
#   make test   start MariaDB + Redis if needed, run every test
SHELL := bash
CARGO ?= cargo
export CARGO
# cargo's target directory, as cargo resolves it (CARGO_TARGET_DIR honoured).
TARGET_DIR = $(shell bash docker/target-dir.sh)

.PHONY: help services test run lab fmt lint build release

help:
	@echo "make run       serve the demo on http://127.0.0.1:8080 (MariaDB + Redis started if needed)"
	@echo "make test      run the whole test suite on real MariaDB + Redis"
	@echo "make lab       run the concurrency lab (release build), results in target/lab/"
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

# Runs every test; the last line sums up all test binaries ("N passed, N failed").
test: services
	@mkdir -p "$(TARGET_DIR)"
	@set -o pipefail; $(CARGO) test --workspace --no-fail-fast 2>&1 | tee "$(TARGET_DIR)/test-output.log"; \
	status=$$?; \
	awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "%d passed, %d failed\n", passed, failed }' "$(TARGET_DIR)/test-output.log"; \
	exit $$status

run: services release
	@APP_BIN="$(TARGET_DIR)/release/app" bash docker/run.sh

lab: services release
	"$(TARGET_DIR)/release/lab" $(LAB_ARGS)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
