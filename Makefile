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
	$(BIN)/ruff check tulle tests benchmarks examples
	$(BIN)/ruff format --check tulle tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff check --fix tulle tests benchmarks examples
	$(BIN)/ruff format tulle tests benchmarks examples

test: lint
	$(BIN)/pytest

# The demo: the shop's config validated, then the shop as a live mesh (`tulle up`) under steady
# traffic with a live table of every service, until Ctrl-C (DEMO_SECONDS=N stops it after N s).
DEMO_SECONDS ?= 0
demo: $(STAMP)
	@echo "== tulle validate examples/shop/  (the demo mesh's config)"
	$(BIN)/tulle validate examples/shop/
	@echo
	$(BIN)/python examples/shop/demo.py --seconds $(DEMO_SECONDS)

# Benchmarks measure; they never assert. The proxy benchmark needs wrk, haproxy and nginx from
# Debian: installed here when missing (as root).
bench: $(STAMP)
	@command -v wrk >/dev/null && command -v haproxy >/dev/null && command -v nginx >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk haproxy nginx-light)
	$(BIN)/python -m benchmarks.proxy_http
	$(BIN)/python -m benchmarks.proxy_inprocess
	$(BIN)/python -m benchmarks.client_modes
	$(BIN)/python -m benchmarks.ads_fanout --clients 100 500 1000

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
