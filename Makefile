# tunnelwatch — every target does its own setup on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NATIVE := $(VENV)/.native
NATIVE_SRC := native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*.rs)
# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on its PATH.
CARGO_PATH := $(PATH):$(HOME)/.cargo/bin

.PHONY: install demo test lint typecheck pytest bench clean
.PHONY: bench-ingest bench-load bench-latency lock lock-upgrade cargo-test

# The whole Python environment (dependencies, dev tools, build backends) is pinned with
# hashes in $(LOCK), made from pyproject.toml by `make lock` (pip-tools, in a venv of its
# own). The project itself is installed on top, without dependencies.
LOCK := requirements.lock
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.7.0
LOCK_VENV := .cache/lock-tools

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q pip==$(PIP_VERSION)
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@$(BIN)/pip check >/dev/null || { $(BIN)/pip check; \
		echo "$(LOCK) does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	touch $(STAMP)

# Python 3.11 on Linux, main and dev dependencies, and the build requirements of the project
# and of native/ (setuptools, wheel, maturin). Pins already in $(LOCK) are kept; only what
# pyproject.toml added or dropped changes. `make lock-upgrade` takes the newest of everything.
LOCK_ARGS := --quiet --generate-hashes --allow-unsafe --extra dev --all-build-deps --strip-extras \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host --newline LF
$(LOCK_VENV)/.installed:
	test -x $(LOCK_VENV)/bin/python || $(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)
	touch $@

lock: $(LOCK_VENV)/.installed
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile $(LOCK_ARGS) $(LOCK_EXTRA) \
		--output-file $(LOCK) pyproject.toml native/pyproject.toml

lock-upgrade:
	$(MAKE) lock LOCK_EXTRA=--upgrade

# The native hot loop of `tunnelwatch analyze` (Rust, pyo3 + maturin from the lock, which
# runs its own `maturin` command: hence .venv/bin on the PATH). Optional: without cargo, or
# when the build fails, analyze runs the pure Python path (same results, several times
# slower) and this says so; unless TUNNELWATCH_NATIVE=1 requires it, as CI does where cargo
# exists: then a missing cargo or a failed build is an error.
HAVE_CARGO := $(shell PATH="$(CARGO_PATH)" command -v cargo 2>/dev/null)
ifeq ($(CI),true)
ifneq ($(HAVE_CARGO),)
export TUNNELWATCH_NATIVE := 1
endif
endif
NATIVE_REQUIRED = case "$${TUNNELWATCH_NATIVE:-}" in 1|yes|on|true|native) true;; *) false;; esac

$(NATIVE): $(STAMP) $(NATIVE_SRC)
	@if PATH="$(CARGO_PATH)" command -v cargo >/dev/null 2>&1; then \
		echo "building native/ (tunnelwatch_native) with cargo"; \
		if PATH="$(abspath $(BIN)):$(CARGO_PATH)" $(BIN)/pip install -q --no-deps --no-build-isolation ./native; \
		then touch $(NATIVE); \
		elif $(NATIVE_REQUIRED); then \
			echo "ERROR: building native/ failed, and TUNNELWATCH_NATIVE=$$TUNNELWATCH_NATIVE requires it" >&2; exit 1; \
		else echo "WARNING: building native/ failed: tunnelwatch analyze will use the pure Python path" >&2; fi; \
	elif $(NATIVE_REQUIRED); then \
		echo "ERROR: cargo not found, and TUNNELWATCH_NATIVE=$$TUNNELWATCH_NATIVE requires native/" >&2; exit 1; \
	else \
		echo "WARNING: cargo not found: native/ not built; tunnelwatch analyze will use the pure Python path (install Rust with rustup for the fast path)" >&2; \
	fi

# The Rust unit tests of native/ (linked against libpython: no extension-module feature).
cargo-test: $(STAMP)
	@if PATH="$(CARGO_PATH)" command -v cargo >/dev/null 2>&1; then \
		cd native && PATH="$(CARGO_PATH)" PYO3_PYTHON="$(abspath $(BIN))/python" \
			cargo test --locked --no-default-features; \
	elif $(NATIVE_REQUIRED); then \
		echo "ERROR: cargo not found, and TUNNELWATCH_NATIVE=$$TUNNELWATCH_NATIVE requires native/" >&2; exit 1; \
	else echo "WARNING: cargo not found: the Rust unit tests of native/ did not run" >&2; fi

install: $(STAMP) $(NATIVE)

demo: $(STAMP) $(NATIVE)
	$(BIN)/tunnelwatch analyze --year 2024 streams/data/sample.log streams/data/rtr-branch4-show-crypto.txt

lint: $(STAMP)
	$(BIN)/ruff check streams load tests
	$(BIN)/ruff format --check streams load tests

typecheck: $(STAMP)
	$(BIN)/mypy streams load

# pytest exits 5 when it collected nothing: that is a failure here.
pytest: $(STAMP) $(NATIVE)
	$(BIN)/pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no tests: failing" >&2; exit 1; fi; exit $$rc

test: lint typecheck cargo-test pytest

# The streaming stack on the sample archive; the stack stays up (`tunnelwatch down` stops it).
.PHONY: demo-stream
demo-stream: $(STAMP) $(NATIVE)
	$(BIN)/tunnelwatch up
	$(BIN)/tunnelwatch replay streams/data/sample.log --to udp://127.0.0.1:5514 --speed max
	$(BIN)/tunnelwatch incidents --wait-quiet 5 --group tunnelwatch
	@echo "The stack is still up: tunnelwatch incidents --follow; tunnelwatch down to stop it."
	@echo "Incident board: http://127.0.0.1:8514/ (export TUNNELWATCH_BOARD_TOKEN before up to acknowledge and silence)"

bench: $(STAMP) $(NATIVE)
	$(BIN)/python -m load.bench_analyze

# Highest zero-loss UDP rate into Kafka: tunnelwatch receive vs rsyslog (imudp → omkafka).
bench-ingest: $(STAMP) $(NATIVE)
	$(BIN)/python -m load.bench_ingest

# Highest sustainable `tunnelwatch load run` rate (UDP) with 1 and with 2 workers.
bench-load: $(STAMP) $(NATIVE)
	$(BIN)/python -m load.bench_load

# Detection latency of the whole stack (up on other ports, 2 workers) under 50k msg/s of UDP
# for 30 s.
bench-latency: $(STAMP) $(NATIVE)
	$(BIN)/python -m load.bench_ingest latency --workers 2 --rate 50000

# How fast 1 and 2 workers drain a prefilled syslog.raw: the native batch path
# (--events engine) against the Python path (--events all), CPU per record.
.PHONY: bench-worker
bench-worker: $(STAMP) $(NATIVE)
	$(BIN)/python -m load.bench_worker

# How fast the notifier drains a backlog of incidents into a webhook and into Alertmanager.
.PHONY: bench-notify
bench-notify: $(STAMP) $(NATIVE)
	$(BIN)/python -m load.bench_notify

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info native/target
