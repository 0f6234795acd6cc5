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
.PHONY: bench-ingest bench-load

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The native hot loop of `tunnelwatch analyze` (Rust, pyo3 + maturin from PyPI). Optional:
# without cargo, or when the build fails, analyze runs the pure Python path (same results,
# several times slower) and this says so.
$(NATIVE): $(STAMP) $(NATIVE_SRC)
	@if PATH="$(CARGO_PATH)" command -v cargo >/dev/null 2>&1; then \
		echo "building native/ (tunnelwatch_native) with cargo"; \
		if PATH="$(CARGO_PATH)" $(BIN)/pip install -q ./native; then touch $(NATIVE); \
		else echo "WARNING: building native/ failed: tunnelwatch analyze will use the pure Python path" >&2; fi; \
	else \
		echo "WARNING: cargo not found: native/ not built; tunnelwatch analyze will use the pure Python path (install Rust with rustup for the fast path)" >&2; \
	fi

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

test: lint typecheck pytest

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

# Detection latency of the whole stack (up on other ports, 2 workers) under 10k msg/s of UDP
# for 30 s.
bench-latency: $(STAMP) $(NATIVE)
	$(BIN)/python -m load.bench_ingest latency --workers 2

# How fast the notifier drains a backlog of incidents into a webhook and into Alertmanager.
.PHONY: bench-notify
bench-notify: $(STAMP) $(NATIVE)
	$(BIN)/python -m load.bench_notify

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info native/target
