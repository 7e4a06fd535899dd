"""Tracing's cost in a whole sidecar process (issue 20: CPU per request at 1 % and at 100 %
sampling against tracing off, in one run): three compiled ``tulle proxy`` processes in front of
the same nginx, each with a control plane of its own whose Mesh sets tracing off
(``spec.tracing.enabled: false``), sampling 1 % or 100 %, spans sent to a real OTLP/HTTP
receiver on loopback (``POST /v1/traces``, a thread of this process pinned to the load
generator's core, never the sidecars'). wrk saturates each sidecar in turn, rounds interleaved
(each round starts with a different one), so all three see the same background load; CPU per
request is the sidecar process's user + system time (/proc) over the requests wrk counted.
``benchmarks.proxy_http`` runs it (``--tracing-rounds``) when the compiled build exists."""

from __future__ import annotations

import http.server
import os
import re
import statistics
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.proxy_http import (
    LOAD_CPU,
    cpu_seconds,
    free_port,
    start_control_plane,
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


def exported(admin: int) -> int:
    """The sidecar's ``tulle_trace_spans_exported_total`` (0 when tracing is off)."""
    text = httpx.get(f"http://127.0.0.1:{admin}/stats/prometheus").text
    found = re.search(r"^tulle_trace_spans_exported_total(?:\{[^}]*\})? ([\d.e+]+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def compare(
    work: Path, backend: int, python: str, rounds: int, seconds: int
) -> dict[str, list[float]]:
    """CPU µs per request of each variant, one figure per round; prints the table."""
    procs: list[subprocess.Popen[bytes]] = []
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    served = dict.fromkeys(VARIANTS, 0)
    try:
        with receiver() as sink:
            sidecars: dict[str, tuple[int, int, int]] = {}  # name: pid, port, admin
            for index, (name, tracing) in enumerate(VARIANTS.items()):
                plane, xds = start_control_plane(
                    work / f"tracing-{index}", backend, mesh(tracing, sink.url)
                )
                procs.append(plane)
                admin = free_port()
                proxy, port = start_sidecar(xds, python, f"trace-{index}", True, admin)
                procs.append(proxy)
                sidecars[name] = (proxy.pid, port, admin)
                wrk(port, 2)  # warm up
            names = list(VARIANTS)
            for round_ in range(rounds):
                for name in names[round_ % 3 :] + names[: round_ % 3]:
                    pid, port, _ = sidecars[name]
                    wrk(port, 1)
                    before = cpu_seconds(pid)
                    _, total = wrk(port, seconds)
                    cpu[name].append((cpu_seconds(pid) - before) / total * 1e6)
                    served[name] += total
            spans = {name: exported(admin) for name, (_, _, admin) in sidecars.items()}
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
    spans: dict[str, int],
    posts: int,
    sent: int,
    rounds: int,
    seconds: int,
) -> None:
    load = os.getloadavg()
    print(
        f"\ntracing, whole sidecar (tulle-mypyc; {rounds} rounds of {seconds} s interleaved, "
        f"spans to an OTLP/HTTP receiver; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})"
    )
    print(f"{'tracing':<10}{'CPU µs/req median':>19}{'best':>8}{'vs off':>9}{'per round':>11}"
          f"{'spans exported':>16}  rounds (µs)")  # fmt: skip
    off = cpu["off"]
    for name, values in cpu.items():
        middle = statistics.median(values)
        # each round against the same round's off: the load they shared
        paired = statistics.median(value / base for value, base in zip(values, off, strict=True))
        each = " ".join(f"{value:.1f}" for value in values)
        print(f"{name:<10}{middle:>19.1f}{min(values):>8.1f}"
              f"{(middle / statistics.median(off) - 1) * 100:>+8.1f}%{(paired - 1) * 100:>+10.1f}%"
              f"{spans[name]:>16,}  {each}")  # fmt: skip
    print(f"receiver: {posts} exports, {sent / 1e6:.1f} MB")
