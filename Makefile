# Every target creates .venv on a fresh machine: a clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all test lint format demo bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check tulle tests
	$(BIN)/ruff format --check tulle tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format tulle tests
	$(BIN)/ruff check --fix tulle tests

test: lint
	$(BIN)/pytest

# Until `tulle up` lands (local mode), the demo validates the shop's mesh config, then shows what
# a broken config looks like to its author.
demo: $(STAMP)
	@echo "== tulle validate examples/shop/  (the demo mesh's config)"
	$(BIN)/tulle validate examples/shop/
	@echo
	@echo "== tulle validate examples/broken/  (a config with mistakes: every finding, with its line)"
	-$(BIN)/tulle validate examples/broken/
	@echo
	@echo "Running the shop as a live mesh ('tulle up') arrives with the local-mode work; see README."

bench: $(STAMP)
	@echo "No data plane exists yet: the benchmarks arrive with the sidecar proxy (see README)."
	@exit 1

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
