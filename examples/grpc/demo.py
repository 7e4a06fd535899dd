"""The proxyless gRPC demo: a stock grpcio client takes all its routing from ``tulle controlplane``.

It starts the control plane, two versions of a plain gRPC server (registered as endpoints of the
``greeter`` service), and a grpcio client on ``xds:///greeter``; then shifts traffic from v1 to v2
with ``tulle apply`` (90/10 → 50/50 → 0/100) while a live table shows where the calls go. Nothing
in the client or the servers knows about Tulle. Runs about 20 seconds and cleans up after itself.

    python examples/grpc/demo.py
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

HERE = Path(__file__).parent
TULLE = str(Path(sys.executable).parent / "tulle")

SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""

SPLIT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
    - route:
        - destination: {host: greeter, subset: v1}
          weight: %d
        - destination: {host: greeter, subset: v2}
          weight: %d
      retries: {attempts: 2, retryOn: unavailable}
"""


def start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


AUTH: dict[str, str] = {}  # the admin token of the demo's control plane, once it runs


def main() -> None:
    console = Console()
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as state:
        try:
            plane, line = start(
                [TULLE, "controlplane", "--state-dir", state, "--xds-port", "0",
                 "--secure-xds-port", "0", "--insecure-xds", "--http-port", "0",
                 "--log-level", "warning"]
            )  # fmt: skip
            procs.append(plane)
            console.print(f"[bold]{line}")
            xds = line.split("xDS on ")[1].split(",")[0]
            api = line.rsplit(" ", 1)[1]
            token = (Path(state) / "admin-token").read_text().strip()
            AUTH["authorization"] = f"Bearer {token}"
            for version in ("v1", "v2"):
                server, ready = start(
                    [sys.executable, str(HERE / "greeter_server.py"), "--name", version]
                )
                procs.append(server)
                port = int(ready.split()[1])
                registration = {
                    "service": "greeter",
                    "address": "127.0.0.1",
                    "port": port,
                    "servicePort": 50051,
                    "protocol": "GRPC",
                    "labels": {"version": version},
                }
                httpx.post(
                    f"{api}/api/v1/endpoints", json=registration, headers=AUTH
                ).raise_for_status()
                console.print(f"greeter {version} serving on 127.0.0.1:{port}, registered")
            apply(api, SUBSETS)
            apply(api, SPLIT % (90, 10))
            run_client(console, api, xds)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
                if proc.stdout:
                    proc.stdout.close()


def apply(api: str, text: str) -> None:
    reply = httpx.post(f"{api}/api/v1/resources", content=text.encode(), headers=AUTH)
    if reply.status_code != 200:
        raise SystemExit(f"apply failed: {reply.json()}")


def run_client(console: Console, api: str, xds: str) -> None:
    bootstrap = {
        "xds_servers": [{"server_uri": xds, "channel_creds": [{"type": "insecure"}],
                         "server_features": ["xds_v3"]}],
        "node": {"id": "proxyless~127.0.0.1~demo-client.default~default.svc.cluster.local"},
    }  # fmt: skip
    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(bootstrap)
    channel = grpc.insecure_channel("xds:///greeter")
    call = channel.unary_unary("/greeter.Greeter/SayHello")
    window: collections.deque[tuple[float, str]] = collections.deque()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                window.append((time.monotonic(), call(b"hi", timeout=5).decode()))
            except grpc.RpcError as error:
                window.append((time.monotonic(), f"error {error.code().name}"))
            time.sleep(0.01)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    console.print()
    steps = [(0, "90% v1, 10% v2"), (6, "50% / 50%"), (12, "100% v2")]
    splits = {6: (50, 50), 12: (0, 100)}
    started = time.monotonic()
    with Live(console=console, refresh_per_second=4) as live:
        while (elapsed := time.monotonic() - started) < 18:
            second = int(elapsed)
            if second in splits:
                apply(api, SPLIT % splits.pop(second))
            now = time.monotonic()
            while window and window[0][0] < now - 2:
                window.popleft()
            counts = collections.Counter(name for _, name in window)
            total = sum(counts.values()) or 1
            applied = [label for at, label in steps if at <= elapsed][-1]
            table = Table(title=f"xds:///greeter: {applied}")
            table.add_column("backend")
            table.add_column("calls", justify="right")
            table.add_column("share", justify="right")
            for name in sorted(counts):
                table.add_row(name, str(counts[name]), f"{100 * counts[name] / total:.0f}%")
            live.update(table)
            time.sleep(0.25)
    stop.set()
    thread.join(5)
    status = httpx.get(f"{api}/api/v1/proxy-status", headers=AUTH).json()
    for node in status["nodes"]:
        synced = {t: ("SYNCED" if s["current"] else "STALE") for t, s in node["types"].items()}
        console.print(f"proxy-status: {node['node']} {synced}")
    channel.close()


if __name__ == "__main__":
    main()
