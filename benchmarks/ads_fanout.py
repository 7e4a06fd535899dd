"""Control-plane fan-out: N simulated ADS clients (the LDS → RDS → CDS → EDS walk a grpcio client
makes, ACKing every response) connected over real gRPC to a real ``tulle controlplane``.

Measures, for each N: the time from starting the clients until every one has walked from its
listener to its endpoints, ACKing each (connect); after a second's pause, the time from
``tulle apply`` of a route change until every client has ACKed it (push); the control plane's
CPU time in the push and its RSS after it (and its peak). The control
plane runs in its own process; the clients in ``--processes`` worker processes
(:mod:`benchmarks.ads_load`), ``--streams-per-connection`` streams on each HTTP/2 connection.

    python -m benchmarks.ads_fanout [--clients 1000 5000 10000] [--runs 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import httpx

from benchmarks.ads_load import HOST, work
from tulle.security.tokens import admin_token

STREAMS_PER_CONNECTION = 50
SETTLE_SECONDS = 1.0
CONFIG = f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 50051, protocol: GRPC, name: grpc}}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
    - {{address: 127.0.0.1, ports: {{grpc: 7001}}}}
    - {{address: 127.0.0.2, ports: {{grpc: 7001}}}}
"""


def route(timeout: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [greeter]
  http:
    - route:
        - destination: {{host: greeter}}
      timeout: {timeout}
"""


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident set (``VmHWM``: its peak so far), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_control_plane(workdir: Path) -> tuple[subprocess.Popen[str], int, int]:
    config = workdir / "config"
    config.mkdir()
    (config / "greeter.yaml").write_text(CONFIG)
    tulle = str(Path(sys.executable).parent / "tulle")
    proc = subprocess.Popen(
        [tulle, "controlplane", "-f", str(config), "--state-dir", str(workdir / "state"),
         "--xds-port", "0", "--secure-xds-port", "0", "--insecure-xds", "--http-port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    xds = int(line.split("xDS on ")[1].split(",")[0].rsplit(":", 1)[1])
    http = int(line.rsplit(":", 1)[1])
    return proc, xds, http


class Workers:
    """The worker processes holding the clients, and what they report."""

    def __init__(
        self, port: int, count: int, processes: int, per_connection: int, tracked: str = ""
    ) -> None:
        """``tracked``: the xDS type whose new versions count as an update (default: routes)."""
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.processes: list[Any] = []
        share = -(-count // processes)
        for first in range(0, count, share):
            parent, child = context.Pipe()
            process = context.Process(
                target=work,
                args=(child, port, first, min(share, count - first), per_connection)
                + ((tracked,) if tracked else ()),
                daemon=True,
            )
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        self.acked: list[dict[str, float]] = [{} for _ in self.pipes]  # version: last ACK
        self.walked: list[float | None] = [None for _ in self.pipes]
        for pipe in self.pipes:
            if not pipe.poll(60) or pipe.recv() != ("ready",):
                raise RuntimeError("a client worker did not start")

    def go(self) -> None:
        for pipe in self.pipes:
            pipe.send("go")

    def _pump(self, done: Callable[[], bool], timeout: float, waiting_for: str) -> None:
        """Read the workers' reports until ``done()``; a failed client or a timeout raises."""
        deadline = time.monotonic() + timeout
        while not done():
            ready = wait(self.pipes, max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"still waiting for {waiting_for} after {timeout:g}s")
            for pipe in ready:
                assert isinstance(pipe, Pipe)
                index = self.pipes.index(pipe)
                try:
                    kind, *rest = pipe.recv()
                except EOFError:
                    raise RuntimeError("a client worker exited") from None
                if kind == "failed":
                    raise RuntimeError(f"a client failed: {rest[0]}")
                if kind == "acked":
                    self.acked[index][rest[0]] = rest[1]
                elif kind == "walked":
                    self.walked[index] = rest[0]

    def all_walked(self, timeout: float) -> tuple[str, float]:
        """Wait until every client has walked from its listener to its endpoints; returns the
        route version they ACKed and the time the last one finished."""
        self._pump(lambda: None not in self.walked, timeout, "every client to connect")
        versions = {v for acked in self.acked for v in acked}
        if len(versions) != 1:
            raise RuntimeError(f"the clients ACKed route versions {sorted(versions)}")
        return versions.pop(), max(when for when in self.walked if when is not None)

    def all_acked(self, known: set[str], timeout: float) -> tuple[str, float]:
        """Wait until every client has ACKed a route version not in ``known``; returns it and
        the time of the last ACK."""

        def new() -> set[str]:
            return {v for acked in self.acked for v in acked if v not in known}

        def done() -> bool:
            return all(any(v not in known for v in acked) for acked in self.acked)

        self._pump(done, timeout, "every client to ACK the new route")
        versions = new()
        if len(versions) != 1:
            raise RuntimeError(f"the clients ACKed different route versions: {sorted(versions)}")
        (version,) = versions
        return version, max(acked[version] for acked in self.acked)

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.send("stop")
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def measure(count: int, processes: int, per_connection: int) -> dict[str, float]:
    """One run of ``count`` clients against a fresh control plane."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, xds, http = start_control_plane(Path(tmp))
        api = f"http://127.0.0.1:{http}/api/v1/resources"
        workers: Workers | None = None
        try:
            auth = {"authorization": f"Bearer {admin_token(Path(tmp) / 'state')}"}
            with httpx.Client(headers=auth) as web:
                web.post(api, content=route("1s").encode()).raise_for_status()
                workers = Workers(xds, count, min(processes, count), per_connection)
                started = time.monotonic()
                workers.go()
                first, connected = workers.all_walked(60 + count / 100)
                time.sleep(SETTLE_SECONDS)  # the last ACKs of the walk are read: a quiet start
                cpu = cpu_seconds(proc.pid)
                begin = time.monotonic()
                web.post(api, content=route("2s").encode()).raise_for_status()
                _, pushed = workers.all_acked({first}, 60)
                push_cpu = cpu_seconds(proc.pid) - cpu
                rss, peak = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
        finally:
            if workers is not None:
                workers.stop()
            proc.terminate()
            proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
    return {
        "clients": count,
        "connect_s": connected - started,
        "update_s": pushed - begin,
        "cpu_s": push_cpu,
        "rss_mb": rss,
        "peak_mb": peak,
    }


# The table's figures after the client count: (key in measure()'s result, decimals).
FIELDS = (("connect_s", 2), ("update_s", 3), ("cpu_s", 2), ("rss_mb", 0), ("peak_mb", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--runs", type=int, default=1, help="runs per count; medians are shown")
    parser.add_argument("--processes", type=int, default=2, help="client worker processes")
    parser.add_argument("--streams-per-connection", type=int, default=STREAMS_PER_CONNECTION)
    args = parser.parse_args()
    columns = (
        "clients", "all connected (s)", "apply -> all ACKed (s)",
        "control-plane CPU in push (s)", "control-plane RSS (MB)", "peak RSS (MB)",
    )  # fmt: skip
    print(
        f"{args.processes} client processes, {args.streams_per_connection} streams per "
        f"connection, {args.runs} run(s) per count (medians), {os.cpu_count()} CPUs"
    )
    print(" | ".join(columns))
    for count in args.clients:
        rows = []
        for run in range(args.runs):
            rows.append(measure(count, args.processes, args.streams_per_connection))
            if args.runs > 1:
                print(f"  run {run + 1}: " + ", ".join(
                    f"{key} {rows[-1][key]:.{digits}f}" for key, digits in FIELDS
                ), flush=True)  # fmt: skip
        cells = [f"{count}"] + [
            f"{statistics.median(row[key] for row in rows):.{digits}f}" for key, digits in FIELDS
        ]
        print(" | ".join(cell.rjust(len(name)) for cell, name in zip(cells, columns, strict=True)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
