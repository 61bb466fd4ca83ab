# Two commands do all set-up on a fresh machine (Python 3.11+ needed):
#   make run    start atrelay (embedded: SQLite + file broker + bundled sandboxes)
#   make test   run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench soak install clean browser

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "atrelay needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# RUN_ARGS: options for `atrelay run` (e.g. RUN_ARGS="--port 8080 --verbose").
run: $(STAMP)
	$(BIN)/atrelay run $(RUN_ARGS)

# pytest runs on four workers, on two cores: most tests wait on real processes (workers, sandboxes, a
# browser), so four overlap those waits (a clean clone: 489 s of pytest, against 716-939 s on two).
# Each worker gets its own Redis databases (tests/support.py has five slots) and PostgreSQL database.
test: $(STAMP)
	@scripts/install-browser
	$(BIN)/ruff check connectors pipelines sandboxes workers tests bench
	$(BIN)/mypy connectors pipelines sandboxes workers
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 4 --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run

# The model test at length (tests/model): 10,000 fresh examples on SQLite and 10,000 on PostgreSQL.
soak: $(STAMP)
	$(BIN)/python -m tests.model.soak $(SOAK_ARGS)

browser:
	@scripts/install-browser

lint: $(STAMP)
	$(BIN)/ruff check connectors pipelines sandboxes workers tests bench
	$(BIN)/mypy connectors pipelines sandboxes workers
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
