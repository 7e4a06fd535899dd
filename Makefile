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

# Until `tulle up` lands (local mode), the demo validates the shop's mesh config, shows what a
# broken config looks like to its author, then runs the proxyless gRPC demo (a stock grpcio client
# routed by the control plane while traffic shifts from v1 to v2).
demo: $(STAMP)
	@echo "== tulle validate examples/shop/  (the demo mesh's config)"
	$(BIN)/tulle validate examples/shop/
	@echo
	@echo "== tulle validate examples/broken/  (a config with mistakes: every finding, with its line)"
	-$(BIN)/tulle validate examples/broken/
	@echo
	@echo "== proxyless gRPC: a stock grpcio client, routed by tulle controlplane (about 20 s)"
	$(BIN)/python examples/grpc/demo.py
	@echo
	@echo "Running the shop as a live mesh ('tulle up') arrives with the local-mode work; see README."

# Benchmarks measure; they never assert. The proxy benchmark needs wrk, haproxy and nginx from
# Debian: installed here when missing (as root).
bench: $(STAMP)
	@command -v wrk >/dev/null && command -v haproxy >/dev/null && command -v nginx >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk haproxy nginx-light)
	$(BIN)/python -m benchmarks.proxy_http
	$(BIN)/python -m benchmarks.client_modes
	$(BIN)/python -m benchmarks.ads_fanout --clients 100 500 1000

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
