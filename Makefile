# Every target creates .venv on a fresh machine: a clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all test lint format demo bench fuzz soak compiled clean system-deps image dashboard

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# System packages (Debian names) each target needs, as COMMAND:PACKAGE: scripts/system-deps
# installs the missing ones with apt-get when run as root, else names them and stops the target.
# The compiled build needs a C compiler; the tests drive curl, ip (network namespaces) and
# iptables (transparent interception in them); the benchmarks compare with wrk, HAProxy and nginx
# and pin processes to cores with taskset.
SYSTEM_DEPS_compiled := cc:gcc
SYSTEM_DEPS_test := curl:curl ip:iproute2 iptables:iptables chromium:chromium prometheus:prometheus
# The dashboard's front end (dashboard/, built into tulle/dashboard/static): Node and npm.
SYSTEM_DEPS_dashboard := node:nodejs npm:npm
SYSTEM_DEPS_bench := wrk:wrk haproxy:haproxy nginx:nginx-light taskset:util-linux
SYSTEM_DEPS_image := debootstrap:debootstrap podman:podman
system-deps-%:
	@scripts/system-deps $* $(SYSTEM_DEPS_$*)

system-deps: system-deps-compiled system-deps-test system-deps-bench

lint: $(STAMP)
	$(BIN)/ruff check tulle tests benchmarks examples fuzz setup.py
	$(BIN)/ruff format --check tulle tests benchmarks examples fuzz setup.py
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff check --fix tulle tests benchmarks examples fuzz setup.py
	$(BIN)/ruff format tulle tests benchmarks examples fuzz setup.py

# The data plane compiled with mypyc (setup.py, TULLE_COMPILE=1): a wheel in build/wheel, unpacked
# in build/compiled (put it first on PYTHONPATH to run it). Rebuilt when a source changes.
COMPILED := build/compiled
COMPILED_STAMP := $(COMPILED)/.built
# What runs again on the compiled build: the in-process tests of the modules it compiles (the
# engine, pools, codecs, TLS and the library, imported from build/compiled), and the sidecar's
# end-to-end tests of its request path, of mTLS between sidecars (tests/local/test_mtls.py: the
# sidecars `tulle up` starts inherit PYTHONPATH) and the adversarial suites (not those of the admin
# listener, options, TCP and tunnels, which are not compiled, nor those of engine features the
# in-process tests cover): about two minutes.
COMPILED_TESTS := tests/client tests/engine tests/transport tests/codec tests/obs tests/proxy \
	tests/e2e/test_sidecar_http_*.py tests/e2e/test_sidecar_grpc.py tests/local/test_mtls.py \
	tests/e2e/test_hostile_http1.py tests/e2e/test_hostile_http2.py -k "not ( \
	grpc_status_retries or held_to_max_connections or serves_without_the_control_plane \
	or drain_and_quit_over_admin or metrics_and_config_dump or bad_proxy_options \
	or inbound_tcp_ports or upgrade_is_tunnelled or connect_is_refused or sigterm_under_load_finishes \
	or no_route_is_a_grpc_status or grpc_fault_abort or server_streaming \
	or half_failing_backend_into_99 or bad_endpoint_is_ejected or split_80_20 \
	or breaker_overflow or abort_fault_30 )"
$(COMPILED_STAMP): $(STAMP) setup.py $(shell find tulle -name '*.py') | system-deps-compiled
	rm -rf build  # nothing stale from an earlier build may enter the wheel
	TULLE_COMPILE=1 $(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w build/wheel .
	$(BIN)/pip install --quiet --no-deps --target $(COMPILED) build/wheel/tulle-*.whl
	touch $@

compiled: $(COMPILED_STAMP)

# The suite runs on the sources; part of it runs again on the compiled build (`make compiled`):
# `python -P` and importlib imports, so `tulle` comes from build/compiled, in the test process
# and in every process it starts. The two runs go side by side (their tests wait on processes
# and sockets far more than they compute; nothing in them shares a port or a namespace name),
# the compiled run's output after the other's; either failing fails the target. The sources' run
# is spread over TEST_WORKERS pytest-xdist workers (3 on two cores; 0: one process, file order):
# the tests of a module that share a fixture stay together, and those that change the host's
# network run one after another (tests/conftest.py says how).
COMPILED_LOG := build/compiled-tests.log
TEST_WORKERS ?= 3
test: system-deps-test lint $(COMPILED_STAMP)
	@PYTHONPATH=$(CURDIR)/$(COMPILED):$(CURDIR) TULLE_EXPECT_COMPILED=1 \
		$(BIN)/python -P -m pytest --import-mode=importlib $(COMPILED_TESTS) \
		> $(COMPILED_LOG) 2>&1 & compiled=$$!; \
	$(BIN)/pytest -n $(TEST_WORKERS); sources=$$?; \
	wait $$compiled; built=$$?; \
	echo "== the compiled build's run ($(COMPILED_LOG))"; cat $(COMPILED_LOG); \
	test $$sources -eq 0 -a $$built -eq 0

# The dashboard's front end (sources in dashboard/, package-lock.json committed) built with Vite
# into tulle/dashboard/static, which is committed and shipped in the wheel: pip users need no
# Node. Run it after changing dashboard/; tests/dashboard/test_build.py fails until you do.
dashboard: system-deps-dashboard
	cd dashboard && npm ci --no-audit --no-fund && npx vite build

# The demo: the shop's config validated, then the shop as a live mesh (`tulle up`) under steady
# traffic with a live table of every service, until Ctrl-C (DEMO_SECONDS=N stops it after N s).
DEMO_SECONDS ?= 0
demo: $(STAMP)
	@echo "== tulle validate examples/shop/  (the demo mesh's config)"
	$(BIN)/tulle validate examples/shop/
	@echo
	$(BIN)/python examples/shop/demo.py --seconds $(DEMO_SECONDS)

# Benchmarks measure; they never assert. Their system packages: SYSTEM_DEPS_bench above.
# proxy_inprocess --tracing: CPU per request with tracing off, at 1 % and at 100 % sampling,
# interleaved in one run, each build (docs/observability.md).
# proxy_mtls also runs the plain sidecar pair on the code before issue 17 (BENCH_BEFORE, the
# last commit before it), to compare the plain-text path with what it was; three rounds (about
# ten minutes), as the README's figures: one round moves by more than the 5 % it looks for.
BENCH_BEFORE ?= 2e8465c
bench: system-deps-bench $(COMPILED_STAMP)
	$(BIN)/python -m benchmarks.proxy_http
	$(BIN)/python -m benchmarks.proxy_mtls --rounds 3 --before $(BENCH_BEFORE)
	$(BIN)/python -m benchmarks.proxy_inprocess
	PYTHONPATH=$(CURDIR)/$(COMPILED):$(CURDIR) $(BIN)/python -P -m benchmarks.proxy_inprocess
	$(BIN)/python -m benchmarks.proxy_inprocess --tracing
	PYTHONPATH=$(CURDIR)/$(COMPILED):$(CURDIR) $(BIN)/python -P -m benchmarks.proxy_inprocess --tracing
	$(BIN)/python -m benchmarks.client_modes
	$(BIN)/python -m benchmarks.ads_fanout --clients 1000 5000 10000
	$(BIN)/python -m benchmarks.kube_registry --services 1000 --endpoints 10 --clients 1000

# Each fuzz target (fuzz/, docs/fuzzing.md) for FUZZ_SECONDS, one after the other; prints the
# executions of each; a failing input is saved under fuzz/crashes/<target>/. (`make test` runs
# each for a few seconds: tests/fuzzing.)
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(BIN)/python -m fuzz --seconds $(FUZZ_SECONDS)

# The shop under SOAK_RATE requests/s for SOAK_SECONDS while its control plane is killed, its
# config churns, replicas drain and sidecars are killed; prints the table (docs/soak.md).
# SOAK_ARGS=--pods (root; ip, iptables, tc) runs it in network namespaces with link loss.
SOAK_SECONDS ?= 600
SOAK_RATE ?= 50
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --seconds $(SOAK_SECONDS) --rate $(SOAK_RATE) $(SOAK_ARGS)

# The container image of the control plane and the sidecar (Containerfile: the compiled build,
# non-root), built with no registry: a Debian root filesystem from debootstrap (the mirror apt
# uses here: scripts/debian-mirror) imported into podman as the base, the Python dependencies
# as wheels fetched with pip, then `podman build`; it prints `tulle version` run inside.
# Not part of `make test`: it downloads a Debian base system.
IMAGE ?= localhost/tulle
IMAGE_TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' tulle/__init__.py)
IMAGE_BASE := localhost/tulle-debian:bookworm
IMAGE_DIR := .image
# Builds run in a chroot and the check without cgroups: these machines' cgroups (hybrid) are
# ones podman's runtime refuses; on a usual Linux host both can be set empty. Where the runtime
# still cannot start a container, scripts/image-run runs the check in a chroot of the image.
PODMAN_BUILD_ARGS ?= --isolation=chroot
PODMAN_RUN_ARGS ?= --cgroups=disabled
$(IMAGE_DIR)/rootfs.tar: | system-deps-image
	rm -rf $(IMAGE_DIR)/rootfs
	mkdir -p $(IMAGE_DIR)
	debootstrap --variant=minbase bookworm $(IMAGE_DIR)/rootfs "$$(scripts/debian-mirror)"
	tar -C $(IMAGE_DIR)/rootfs --numeric-owner -cf $@.part . && mv $@.part $@
	rm -rf $(IMAGE_DIR)/rootfs

# The image's Python dependencies (and mypy, setuptools for its compiled build) as wheels,
# fetched here with the project's pip: the image build then needs no package index.
$(IMAGE_DIR)/wheels/.done: pyproject.toml $(STAMP)
	rm -rf $(IMAGE_DIR)/wheels
	$(BIN)/pip wheel --quiet -w $(IMAGE_DIR)/wheels . "mypy>=1.11,<3" "setuptools>=77"
	rm -f $(IMAGE_DIR)/wheels/tulle-*.whl
	touch $@

image: $(IMAGE_DIR)/rootfs.tar $(IMAGE_DIR)/wheels/.done
	podman import $(IMAGE_DIR)/rootfs.tar $(IMAGE_BASE)
	podman build $(PODMAN_BUILD_ARGS) --network=host --build-arg BASE=$(IMAGE_BASE) \
		-t $(IMAGE):$(IMAGE_TAG) -f Containerfile .
	PODMAN_RUN_ARGS="$(PODMAN_RUN_ARGS)" scripts/image-run $(IMAGE):$(IMAGE_TAG) version

clean:
	rm -rf $(VENV) build $(IMAGE_DIR) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
