# One entry point. Every target sets the environment up by itself first.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench clean help

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup:  ## Create/refresh .venv (quick when nothing changed)
	@scripts/setup.sh

demo: setup  ## The main job end to end on embedded defaults
	@scripts/demo.sh "$(DATA)"

test: setup  ## All tests, the slow end-to-end ones included (what CI runs)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup  ## Tests without the slow end-to-end ones
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: setup  ## Every benchmark; each prints one JSON line of figures last
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:  ## Remove the venv and generated data
	rm -rf $(VENV) $(DATA) .cache
