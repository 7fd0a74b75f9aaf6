# Shoal developer entry points (DESIGN §9). Every target sets itself up on a fresh machine.
#
#   make demo     venv + build the Python extension + run the demo (local node, 100k vectors)
#   make test     venv + cargo tests + build the extension + pytest end-to-end (tests/)
#   make verify   read-only checks: rustfmt --check, ruff + mypy, clippy, the tests, stubtest (what CI runs)
#   make fix      rustfmt + clippy --fix, ruff format + ruff --fix
#   make build    release build of the shoal-node binary
#   make wheel    an abi3 wheel in dist/ (installs and runs with no Rust toolchain: python -m shoal.node)
#   make bench    bench/run.sh (benchmarks are never part of the tests)
#   make faults   the long fault matrix (tests/test_faults.py, ~25 min; the bounded one is part of make test)
#
# cargo builds into target/, maturin into target-py/ so the two never fight over pyo3 features.

SHELL        := /bin/bash
PYTHON       ?= python3
VENV         := .venv
VPY          := $(VENV)/bin/python
PY_DEPS      := maturin numpy pytest pytest-xdist tqdm pandas grpcio prometheus-client
NB_DEPS      := nbmake ipykernel matplotlib scikit-learn pyarrow
# Python checks of `make verify` (lint-py, stubtest) and `make fix`; pinned so that a new release cannot turn
# verify red by itself.
PY_DEV_DEPS  := ruff==0.17.6 mypy==2.4.1
CARGO        ?= cargo
PY_TARGET    := $(CURDIR)/target-py
PYTEST_ARGS  ?=
# pytest workers (pytest-xdist, one test file per worker at a time): most end-to-end tests wait on elections,
# timers and node start-up rather than on the CPU, so two workers halve the wall time on 2 cores.
PYTEST_WORKERS ?= 2
DEMO_ARGS    ?=

.PHONY: help venv dev-deps notebook-deps develop develop-test wheel wheel-test build test test-rust test-py verify fmt-check \
	lint-py stubtest clippy fix bench demo faults clean

help:
	@sed -n '2,11p' Makefile | sed 's/^# \{0,1\}//'

# --- Python environment -------------------------------------------------------------------------

venv: $(VENV)/.deps-ok

$(VENV)/.deps-ok: Makefile
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet $(PY_DEPS)
	@touch $@

# The Python linters and type checker (lint-py, stubtest, fix).
dev-deps: $(VENV)/.dev-deps-ok

$(VENV)/.dev-deps-ok: $(VENV)/.deps-ok
	$(VPY) -m pip install --quiet $(PY_DEV_DEPS)
	@touch $@

# What the notebooks use (data, plots) and what executes them in `make test` (nbmake).
notebook-deps: $(VENV)/.nb-deps-ok

$(VENV)/.nb-deps-ok: $(VENV)/.deps-ok
	$(VPY) -m pip install --quiet $(NB_DEPS)
	@touch $@

# Builds shoal._native (release) and installs the package into .venv in editable mode:
# the .so lands in python/shoal/, Python sources are used in place.
develop: venv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH CARGO_TARGET_DIR=$(PY_TARGET) \
		$(VENV)/bin/maturin develop --release --quiet

# An abi3 wheel (CPython >= 3.10, this platform) in dist/. The node binary is the wheel's own extension
# (`python -m shoal.node`), so nothing else is needed where it is installed.
wheel: venv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH CARGO_TARGET_DIR=$(PY_TARGET) \
		$(VENV)/bin/maturin build --release --quiet --out dist

# --- Rust ---------------------------------------------------------------------------------------

build:
	$(CARGO) build --release -p shoal-node

# Default members: every crate but the pyo3 cdylib (its test harness cannot link with extension-module).
# `make test` uses the `ci` profile (Cargo.toml) for both cargo's tests and the extension, in one target dir.
test-rust:
	$(CARGO) test --profile ci

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --profile ci --workspace --all-targets -- -D warnings

# --- Python checks (configured in pyproject.toml) -------------------------------------------------

# ruff (lint and format) on python/ and tests/, mypy on the package (shoal/_native.pyi types the extension).
lint-py: dev-deps
	$(VENV)/bin/ruff check --no-fix python tests
	$(VENV)/bin/ruff format --check python tests
	$(VPY) -m mypy

# The stub python/shoal/_native.pyi against the built extension (what a stub cannot express is listed, with
# the reason, in python/stubtest-allowlist.txt).
stubtest: develop-test dev-deps
	$(VPY) -m mypy.stubtest shoal._native --allowlist python/stubtest-allowlist.txt

# --- tests --------------------------------------------------------------------------------------

# The extension the Python tests load: built with the `ci` profile into target/, sharing test-rust's build.
develop-test: venv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH CARGO_TARGET_DIR=$(CURDIR)/target \
		$(VENV)/bin/maturin develop --profile ci --quiet

# The same build packed as a wheel (no recompilation): tests/test_wheel.py installs it into a fresh venv
# without cargo on PATH and runs a 3-node cluster from it.
wheel-test: develop-test
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH CARGO_TARGET_DIR=$(CURDIR)/target \
		$(VENV)/bin/maturin build --profile ci --quiet --out target/wheels-ci

test-py: develop-test wheel-test notebook-deps
	SHOAL_WHEEL_DIR=$(CURDIR)/target/wheels-ci $(VPY) -m pytest tests/ notebooks/ --nbmake --nbmake-timeout=600 --durations=15 \
		-n $(PYTEST_WORKERS) --dist loadfile \
		$(PYTEST_ARGS)

test: venv test-rust test-py

verify: fmt-check lint-py clippy test stubtest

# The long fault matrix: every scenario of tests/test_faults.py runs 90 s, twice; the table of results is
# appended to faults-table.md.
faults: develop
	SHOAL_FAULTS_LONG=1 SHOAL_FAULTS_TABLE=$(CURDIR)/faults-table.md $(VPY) -m pytest tests/test_faults.py -s -p no:cacheprovider $(PYTEST_ARGS)

fix: dev-deps
	$(PYTHON) tools/strip_notebooks.py
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged -- -D warnings
	$(CARGO) fmt --all
	$(VENV)/bin/ruff format python tests
	$(VENV)/bin/ruff check --fix python tests
	$(VENV)/bin/ruff format python tests

# --- demo and benchmarks ------------------------------------------------------------------------

demo: develop
	$(VPY) -m shoal.demo $(DEMO_ARGS)

bench: develop
	@if [ -x bench/run.sh ]; then bench/run.sh; \
	elif [ -f bench/run.sh ]; then bash bench/run.sh; \
	else echo "bench/run.sh not present yet: nothing to run"; fi

clean:
	rm -rf $(VENV) target-py python/shoal/*.so
