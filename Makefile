# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench bench-quick setup fuzz test-container

$(BIN)/fwatchdog: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,otel]'
	touch $@

setup: $(BIN)/fwatchdog

## Serve `cat` on :8080; try: curl -d 'hello' http://127.0.0.1:8080/
run: setup
	fprocess=cat $(BIN)/fwatchdog

## Set up and run the whole test suite (what CI runs).
test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy --strict src
	$(BIN)/python -m pytest -q

## Build the Dockerfile's image and the templates with podman (installed if missing; root,
## Debian) and prove them in real containers: serving, health check, zombies, SIGTERM, non-root.
test-container: setup
	tests/container/prepare.sh
	FWATCHDOG_CONTAINER_TEST=1 $(BIN)/python -m pytest -q tests/container

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src

## Every scenario; set REFERENCE_WATCHDOG=/path/to/of-watchdog to compare in the same run.
bench: setup
	$(BIN)/python -m benchmarks

## A few seconds per scenario: run before and after a change.
bench-quick: setup
	$(BIN)/python -m benchmarks --quick

## Coverage-guided fuzzing (atheris), FUZZ_SECONDS per harness (fuzz/run.py); not in `make test`.
FUZZ_SECONDS ?= 60
fuzz: setup
	$(BIN)/pip install --quiet -e '.[fuzz]'
	nice -n 19 $(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)
