"""A burst of ADS streams larger than grpcio's pending-call limits is served, not refused.

grpcio queues each new call until the asyncio server takes it, one per turn of the event loop;
by default it refuses queued calls at random past 1,000 and all of them past 3,000
(RESOURCE_EXHAUSTED, "Too many pending requests for this server"). That is what stopped
``benchmarks/ads_fanout.py --clients 1800``: the refused clients never got a response. Here the
event loop is held while 3,500 streams arrive, so that all of them are queued at once."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from benchmarks.ads_load import ADS_PATH
from benchmarks.grpc_h2 import Connection
from tulle.xds import types
from tulle.xds.node import NodeInfo
from tulle.xds.server import AdsServer, start_server

STREAMS = 3_500  # past grpcio's default hard limit of 3,000 pending calls


class NoResources:
    def resources(self, node: NodeInfo, type_url: str) -> Mapping[str, Any]:
        return {}


def burst(port: int, queued: threading.Event) -> Counter[str]:
    """Open STREAMS streams, each asking for a listener; returns how each ended up: ``answered``
    or the gRPC status it ended with. Sets ``queued`` once the server has read every stream's
    headers (it acknowledged a PING sent after them)."""
    connection = Connection(f"127.0.0.1:{port}", ADS_PATH)
    pending: set[int] = set()
    for index in range(STREAMS):
        stream_id = connection.open()
        request = discovery_pb2.DiscoveryRequest(type_url=types.LISTENER, resource_names=["x"])
        request.node.id = f"proxyless~127.0.0.1~burst-{index}.default~default.svc.cluster.local"
        connection.send(stream_id, request.SerializeToString())
        pending.add(stream_id)
    connection.ping()
    outcomes: Counter[str] = Counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        while pending:
            sock.sendall(connection.data_to_send())
            data = sock.recv(1 << 20)
            if not data:
                outcomes["connection closed"] += len(pending)
                break
            for event in connection.receive(data):
                if event.kind == "pong":
                    queued.set()
                elif event.stream_id in pending:
                    pending.discard(event.stream_id)
                    outcome = (
                        "answered" if event.kind == "message" else f"{event.status} {event.detail}"
                    )
                    outcomes[outcome] += 1
    queued.set()
    return outcomes


@pytest.fixture(autouse=True)
def _collector_thresholds() -> Iterator[None]:
    """start_server sets the process's cyclic collector: this process is pytest's."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_a_burst_past_grpcios_pending_call_limit_is_served():
    async def scenario() -> Counter[str]:
        server, port, _ = await start_server(AdsServer(NoResources()), "127.0.0.1", 0)
        try:
            queued = threading.Event()
            client = asyncio.get_running_loop().run_in_executor(None, burst, port, queued)
            # Hold the event loop (so the server takes no call) until every call is queued.
            assert queued.wait(60), "the server never acknowledged the PING"
            return await asyncio.wait_for(client, 120)
        finally:
            await server.stop(0)

    assert asyncio.run(scenario()) == Counter({"answered": STREAMS})
