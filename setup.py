"""Build hook. Plain builds (``pip install .``, ``pip install -e .``) are pure Python. With
``TULLE_COMPILE=1`` the data plane's per-request modules are compiled with mypyc (part of mypy)
into C extensions beside their sources in the wheel: the same code, about 40 % less CPU
per proxied request (README, "Benchmarks"). ``make compiled`` builds such a wheel; an editable
install is never compiled, so no extension can shadow a source a developer edits."""

from __future__ import annotations

import os
import sys

from setuptools import setup

# The request path of the sidecar and the library: what runs for every request. Connection
# setup, configuration and the admin listener stay interpreted (compiling them would only add to
# the process's memory).
COMPILED_MODULES = (
    "codec/http1", "codec/http2", "codec/paths",
    "engine/attempt_steps", "engine/balancer", "engine/cluster", "engine/cluster_config",
    "engine/config", "engine/errors", "engine/inbound", "engine/matching", "engine/message",
    "engine/outbound", "engine/outlier", "engine/plan", "engine/planner", "engine/priority",
    "engine/ratelimit", "engine/routes", "engine/tasks",
    "engine/trace_setup",  # its record() hands each sampled request to the exporter
    "obs/access_log", "obs/access_text", "obs/finished", "obs/metrics", "obs/otlp",
    "obs/otlp_wire", "obs/pending", "obs/span_events", "obs/trace_export", "obs/tracing",
    "proxy/app", "proxy/core", "proxy/dispatch", "proxy/h2_front", "proxy/http_front",
    "proxy/in_flight", "proxy/listeners", "proxy/recording", "proxy/requests", "proxy/tunnels",
    "transport/h2pool", "transport/pool", "transport/upstream",
    # mTLS on every connection: records in and out, the handshake, the inbound first-byte test
    # (PERMISSIVE) and the mesh's contexts. tls_errors stays interpreted: errors only.
    "transport/mtls", "transport/tls", "transport/tls_open", "transport/tls_transport",
    "client/inbound",  # its ServedRequest subclasses a compiled class: interpreted ones may not
)  # fmt: skip


def compiled_sources() -> list[str]:
    """The modules mypyc compiles, as paths relative to the project."""
    return [f"tulle/{module}.py" for module in COMPILED_MODULES]


# The setuptools commands that build extensions for a wheel (not metadata, sdist or editable).
BUILD_COMMANDS = frozenset({"bdist_wheel", "build", "build_ext"})


def extensions() -> list[object]:
    """mypyc's extensions when TULLE_COMPILE=1 and a wheel is being built, else none."""
    if os.environ.get("TULLE_COMPILE") != "1":
        return []
    if not BUILD_COMMANDS.intersection(sys.argv):
        if "editable_wheel" in sys.argv:
            print("TULLE_COMPILE=1 ignored: an editable install stays pure Python", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - needed only to compile
    except ImportError:
        sys.exit(
            "TULLE_COMPILE=1 needs mypy (which carries mypyc) where the wheel is built: "
            "pip install mypy, then pip wheel --no-build-isolation . (or run make compiled)"
        )
    # One C file per module: the C compiler gets through them faster than through one. -O2, and
    # symbols hidden (the modules find each other through capsules, not the dynamic linker): the
    # extension's code is its share of the sidecar's memory, and these make it 10 % smaller at
    # the same speed as -O3 with every symbol exported.
    built = list(mypycify(compiled_sources(), opt_level="2", multi_file=True))
    for extension in built:
        extension.extra_compile_args.append("-fvisibility=hidden")
    return built


setup(ext_modules=extensions())
