"""Control-plane fan-out: N lightweight ADS clients (the LDS → RDS → CDS → EDS walk a grpcio
client makes, ACKing every response) connected over real gRPC to a real ``tulle controlplane``.
Measures the time from ``tulle apply`` of a route change until every client has ACKed it, and the
control plane's RSS. Clients run in this process (asyncio), the control plane in its own.

    python -m benchmarks.ads_fanout [--clients 100 500 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tulle.xds import types

STREAMS_PER_CHANNEL = 50
HOST = "greeter.default.svc.cluster.local"

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


@dataclass
class AdsClient:
    """One client: subscribes like grpcio and records when it ACKs each route version."""

    index: int
    acked_routes: dict[str, float] = field(default_factory=dict)
    nacks: int = 0

    @property
    def node_id(self) -> str:
        return f"proxyless~127.0.0.1~bench-{self.index}.default~default.svc.cluster.local"

    async def run(self, stub: Any) -> None:
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        node = discovery_pb2.DiscoveryRequest().node
        node.id = self.node_id

        def request(type_url: str, names: list[str], version: str = "", nonce: str = "") -> None:
            message = discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=names, version_info=version, response_nonce=nonce
            )
            message.node.id = self.node_id
            outbox.put_nowait(message)

        async def requests() -> Any:
            while True:
                yield await outbox.get()

        subscribed: dict[str, list[str]] = {types.LISTENER: [f"{HOST}:50051"]}
        request(types.LISTENER, subscribed[types.LISTENER])
        async for response in stub.StreamAggregatedResources(requests()):
            names: list[str] = []
            for packed in response.resources:
                if response.type_url == types.LISTENER:
                    listener = listener_pb2.Listener()
                    packed.Unpack(listener)
                    manager = hcm.HttpConnectionManager()
                    listener.api_listener.api_listener.Unpack(manager)
                    names.append(manager.rds.route_config_name)
                elif response.type_url == types.ROUTE:
                    config = route_pb2.RouteConfiguration()
                    packed.Unpack(config)
                    for vhost in config.virtual_hosts:
                        for item in vhost.routes:
                            if item.route.cluster:
                                names.append(item.route.cluster)
                elif response.type_url == types.CLUSTER:
                    cluster = cluster_pb2.Cluster()
                    packed.Unpack(cluster)
                    names.append(cluster.eds_cluster_config.service_name or cluster.name)
            # ACK, then subscribe to what the response names (as grpcio does).
            request(response.type_url, subscribed.get(response.type_url, []),
                    response.version_info, response.nonce)  # fmt: skip
            if response.type_url == types.ROUTE:
                self.acked_routes.setdefault(response.version_info, time.monotonic())
            following = {
                types.LISTENER: types.ROUTE,
                types.ROUTE: types.CLUSTER,
                types.CLUSTER: types.ENDPOINT,
            }.get(response.type_url)
            if following and sorted(set(names)) != subscribed.get(following):
                subscribed[following] = sorted(set(names))
                request(following, subscribed[following])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_control_plane(workdir: Path) -> tuple[subprocess.Popen[str], int, int]:
    config = workdir / "config"
    config.mkdir()
    (config / "greeter.yaml").write_text(CONFIG)
    tulle = str(Path(sys.executable).parent / "tulle")
    proc = subprocess.Popen(
        [tulle, "controlplane", "-f", str(config), "--state-dir", str(workdir / "state"),
         "--xds-port", "0", "--http-port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    xds = int(line.split("xDS on ")[1].split(",")[0].rsplit(":", 1)[1])
    http = int(line.rsplit(":", 1)[1])
    return proc, xds, http


async def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, xds, http = start_control_plane(Path(tmp))
        api = f"http://127.0.0.1:{http}/api/v1/resources"
        try:
            async with httpx.AsyncClient() as web:
                await web.post(api, content=route("1s").encode())
                channels = [
                    grpc.aio.insecure_channel(f"127.0.0.1:{xds}")
                    for _ in range((count + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
                ]
                clients = [AdsClient(i) for i in range(count)]
                tasks = [
                    asyncio.create_task(
                        c.run(
                            ads_pb2_grpc.AggregatedDiscoveryServiceStub(
                                channels[i // STREAMS_PER_CHANNEL]
                            )
                        )
                    )
                    for i, c in enumerate(clients)
                ]
                started = time.monotonic()
                while not all(c.acked_routes for c in clients):
                    await asyncio.sleep(0.01)
                connect_s = time.monotonic() - started
                known = {v for c in clients for v in c.acked_routes}
                begin = time.monotonic()
                reply = await web.post(api, content=route("2s").encode())
                assert reply.status_code == 200, reply.text
                while not all(set(c.acked_routes) - known for c in clients):
                    await asyncio.sleep(0.005)
                latest = max(
                    max(t for v, t in c.acked_routes.items() if v not in known) for c in clients
                )
                update_s = latest - begin
                rss = rss_mb(proc.pid)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for channel in channels:
                    await channel.close()
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
    return {"clients": count, "connect_s": connect_s, "update_s": update_s, "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 500, 1000])
    args = parser.parse_args()
    columns = ("clients", "all connected (s)", "apply -> all ACKed (s)", "control-plane RSS (MB)")
    print(" | ".join(columns))
    for count in args.clients:
        row = asyncio.run(measure(count))
        cells = (
            f"{row['clients']:.0f}",
            f"{row['connect_s']:.2f}",
            f"{row['update_s']:.3f}",
            f"{row['rss_mb']:.0f}",
        )
        print(" | ".join(cell.rjust(len(name)) for cell, name in zip(cells, columns, strict=True)))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
