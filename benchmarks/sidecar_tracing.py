"""Tracing's cost in a whole sidecar process (issue 20: CPU per request at 1 % and at 100 %
sampling against tracing off, in one run): one compiled ``tulle proxy`` in front of nginx, its
control plane's Mesh switched between tracing off (``spec.tracing.enabled: false``), sampling
1 % and 100 % (each switch waited for in the sidecar's ``/config_dump``), spans sent to a real
OTLP/HTTP receiver on loopback (``POST /v1/traces``, a thread of this process pinned to the load
generator's core, never the sidecar's). wrk saturates the sidecar under each setting in turn,
rounds interleaved (each round starts with a different setting), so every setting sees the same
background load, and the same process: two processes of the same build differ by up to ±5 % on
this VM (their memory layouts), more than 1 % sampling costs. CPU per request is the sidecar
process's user + system time (/proc) over the requests wrk counted. ``benchmarks.proxy_http``
runs it (``--tracing-rounds``) when the compiled build exists."""

from __future__ import annotations

import http.server
import json
import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.proxy_http import (
    LOAD_CPU,
    apply,
    cpu_seconds,
    free_port,
    start_control_plane_api,
    start_sidecar,
    wrk,
)

VARIANTS = {"off": "enabled: false", "1 %": "sampling: 1", "100 %": "sampling: 100"}


class Receiver:
    """An OTLP/HTTP receiver on loopback: answers every ``POST /v1/traces`` 200, counting the
    exports and their bytes (it does not decode them: that would take the load core's CPU)."""

    def __init__(self) -> None:
        self.posts = 0
        self.bytes = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = 200 if self.path == "/v1/traces" else 404
                if status == 200:
                    receiver.posts += 1
                    receiver.bytes += len(body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def serve(self) -> None:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # this thread (and its handlers): wrk's core
        self.server.serve_forever()


@contextmanager
def receiver() -> Iterator[Receiver]:
    sink = Receiver()
    thread = threading.Thread(target=sink.serve, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.server.shutdown()
        sink.server.server_close()


def mesh(tracing: str, endpoint: str) -> str:
    return (
        "apiVersion: tulle.dev/v1alpha1\nkind: Mesh\n"
        "metadata: {name: mesh, namespace: tulle-system}\n"
        f"spec: {{tracing: {{{tracing}, otlp: {{endpoint: '{endpoint}'}}}}}}\n"
    )


SAMPLING: dict[str, set[float]] = {"off": set(), "1 %": {1.0}, "100 %": {100.0}}
"""Each setting's sampling as the sidecar's listeners carry it (none: tracing off)."""


def exported(admin: int) -> int:
    """The sidecar's ``tulle_trace_spans_exported_total`` (0 when tracing is off)."""
    text = httpx.get(f"http://127.0.0.1:{admin}/stats/prometheus").text
    found = re.search(r"^tulle_trace_spans_exported_total(?:\{[^}]*\})? ([\d.e+]+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def sampling_in_force(admin: int) -> set[float]:
    """The samplings the sidecar's listeners have now (those that trace)."""
    dump = httpx.get(f"http://127.0.0.1:{admin}/config_dump").json()
    text = json.dumps(dump["resources"].get("listeners", []))
    return {
        float(value) for value in re.findall(r'"randomSampling": \{"value": ([\d.e+]+)\}', text)
    }


def switch(work: Path, api: str, admin: int, name: str, endpoint: str) -> None:
    """The Mesh's tracing set to ``name`` (a key of VARIANTS), once the sidecar has it."""
    apply(work, api, mesh(VARIANTS[name], endpoint))
    deadline = time.monotonic() + 30
    while sampling_in_force(admin) != SAMPLING[name]:
        if time.monotonic() > deadline:
            raise SystemExit(f"the sidecar did not take tracing {name!r} within 30 s")
        time.sleep(0.05)


def compare(
    work: Path, backend: int, python: str, rounds: int, seconds: int
) -> dict[str, list[float]]:
    """CPU µs per request of each variant, one figure per round; prints the table."""
    procs: list[subprocess.Popen[bytes]] = []
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        with receiver() as sink:
            plane, xds, api = start_control_plane_api(
                work / "tracing", backend, mesh(VARIANTS["off"], sink.url)
            )
            procs.append(plane)
            admin = free_port()
            proxy, port = start_sidecar(xds, python, "trace-0", True, admin)
            procs.append(proxy)
            wrk(port, 2)  # warm up
            names = list(VARIANTS)
            for round_ in range(rounds):
                for name in names[round_ % 3 :] + names[: round_ % 3]:
                    switch(work / "tracing", api, admin, name, sink.url)
                    wrk(port, 1)
                    before = cpu_seconds(proxy.pid)
                    _, total = wrk(port, seconds)
                    cpu[name].append((cpu_seconds(proxy.pid) - before) / total * 1e6)
            spans = exported(admin)
            posts, sent = sink.posts, sink.bytes
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    report(cpu, spans, posts, sent, rounds, seconds)
    return cpu


def report(
    cpu: dict[str, list[float]],
    spans: int,
    posts: int,
    sent: int,
    rounds: int,
    seconds: int,
) -> None:
    load = os.getloadavg()
    print(
        f"\ntracing, whole sidecar (tulle-mypyc, one process, its Mesh switched; {rounds} rounds "
        f"of {seconds} s interleaved, spans to an OTLP/HTTP receiver; load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f})"
    )
    print(f"{'tracing':<10}{'CPU µs/req median':>19}{'best':>8}{'vs off':>9}{'per round':>11}"
          f"  rounds (µs)")  # fmt: skip
    off = cpu["off"]
    for name, values in cpu.items():
        middle = statistics.median(values)
        # each round against the same round's off: the load they shared
        paired = statistics.median(value / base for value, base in zip(values, off, strict=True))
        each = " ".join(f"{value:.1f}" for value in values)
        print(f"{name:<10}{middle:>19.1f}{min(values):>8.1f}"
              f"{(middle / statistics.median(off) - 1) * 100:>+8.1f}%{(paired - 1) * 100:>+10.1f}%"
              f"  {each}")  # fmt: skip
    print(f"spans exported: {spans:,}; receiver: {posts} exports, {sent / 1e6:.1f} MB")
