# Quick start: `make demo` runs the whole product on generated data (Spark local mode);
# `make test` runs the test suite. Both create .venv on first use (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
CURATE := $(VENV)/bin/curate

.PHONY: setup demo test test-all bench clean

setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(CURATE) demo --workdir demo-output

# Two pytest-xdist workers (CI has 2 cores; most tests wait on JVMs, subprocesses and servers).
# One file per worker at a time; the order and the one shared unit: tests/conftest.py. TEST_WORKERS=0: serial.
# `make test` (CI) leaves out the tests marked `extended`: each repeats, on a second engine, store
# or path, a property a default test checks (docs/ARCHITECTURE.md, Tests); `make test-all` runs every test.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q --durations=40 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: setup
	$(PYTEST) -m "not extended" tests

test-all: setup
	$(PYTEST) tests

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf demo-output .pytest_cache
