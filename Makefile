# tunnelwatch — every target does its own setup on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tunnelwatch analyze --year 2024 streams/data/sample.log

lint: $(STAMP)
	$(BIN)/ruff check streams load tests
	$(BIN)/ruff format --check streams load tests

typecheck: $(STAMP)
	$(BIN)/mypy streams load

# pytest exits 5 when it collected nothing: that is a failure here.
pytest: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no tests: failing" >&2; exit 1; fi; exit $$rc

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m load.bench_analyze

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
