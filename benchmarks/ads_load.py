"""The simulated ADS clients of the fan-out benchmark, run in a worker process.

Each client is one gRPC stream that walks LDS → RDS → CDS → EDS as grpcio's xDS client does,
ACKing every response and subscribing to the names it refers to, and records when it first ACKs
each route version. ``per_connection`` streams share an HTTP/2 connection (:mod:`grpc_h2`).
The worker tells the parent over a pipe when all of its clients have ACKed a route version
(``("acked", version, monotonic time of the last ACK)``), when all of them have walked down to
their endpoints (``("walked", time)``: connected), or that a stream ended (``("failed", why)``):
a lost client is reported, never waited for."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.service.discovery.v3 import discovery_pb2

from benchmarks.grpc_h2 import Connection, Event
from tulle.xds import types

ADS_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
HOST = "greeter.default.svc.cluster.local"
FOLLOWING = {types.LISTENER: types.ROUTE, types.ROUTE: types.CLUSTER, types.CLUSTER: types.ENDPOINT}


def referred_names(response: Any) -> list[str]:
    """The names a response refers to: the route of a listener, the clusters of a route, the
    load assignment of a cluster."""
    names: set[str] = set()
    for packed in response.resources:
        if response.type_url == types.LISTENER:
            listener = listener_pb2.Listener.FromString(packed.value)
            manager = hcm.HttpConnectionManager()
            listener.api_listener.api_listener.Unpack(manager)
            names.add(manager.rds.route_config_name)
        elif response.type_url == types.ROUTE:
            config = route_pb2.RouteConfiguration.FromString(packed.value)
            names.update(
                item.route.cluster
                for vhost in config.virtual_hosts
                for item in vhost.routes
                if item.route.cluster
            )
        elif response.type_url == types.CLUSTER:
            cluster = cluster_pb2.Cluster.FromString(packed.value)
            names.add(cluster.eds_cluster_config.service_name or cluster.name)
    return sorted(names)


@dataclass
class AdsClient:
    """One simulated client on one stream."""

    node_id: str
    connection: Connection
    stream_id: int = 0
    subscribed: dict[str, list[str]] = field(default_factory=dict)
    acked_routes: dict[str, float] = field(default_factory=dict)  # versions of ``tracked``
    walked: bool = False  # it has ACKed its endpoints: the walk is complete
    tracked: str = types.ROUTE  # the type whose versions are reported (ENDPOINT: EDS pushes)

    def start(self) -> None:
        self.stream_id = self.connection.open()
        self.subscribed[types.LISTENER] = [f"{HOST}:50051"]
        self._request(types.LISTENER, first=True)

    def _request(
        self, type_url: str, version: str = "", nonce: str = "", first: bool = False
    ) -> None:
        message = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=self.subscribed.get(type_url, []),
            version_info=version,
            response_nonce=nonce,
        )
        if first:
            message.node.id = self.node_id  # as Envoy and grpcio: the node on the first request
        self.connection.send(self.stream_id, message.SerializeToString())

    def received(self, data: bytes) -> str | None:
        """Handle one response: ACK it, subscribe to what it refers to; returns the route
        version it ACKed, if it was a route response."""
        response = discovery_pb2.DiscoveryResponse.FromString(data)
        self._request(response.type_url, response.version_info, response.nonce)
        if response.type_url == types.ENDPOINT:
            self.walked = True
        following = FOLLOWING.get(response.type_url)
        if following is not None:
            names = referred_names(response)
            if names != self.subscribed.get(following):
                self.subscribed[following] = names
                self._request(following)
        if response.type_url != self.tracked or response.version_info in self.acked_routes:
            return None
        self.acked_routes[response.version_info] = time.monotonic()
        return response.version_info


class _Protocol(asyncio.Protocol):
    def __init__(self, worker: Worker, connection: Connection) -> None:
        self.worker, self.connection = worker, connection
        self.transport: asyncio.Transport | None = None
        self.clients: dict[int, AdsClient] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        for event in self.connection.receive(data):
            self.worker.handle(self.clients, event)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.clients:
            self.worker.fail(f"connection lost: {exc or 'closed by the server'}")


def _same(protocol: _Protocol) -> _Protocol:
    return protocol


class Worker:
    """``count`` clients numbered from ``first``, reporting to ``pipe``."""

    def __init__(
        self,
        pipe: Pipe,
        port: int,
        first: int,
        count: int,
        per_connection: int,
        tracked: str = types.ROUTE,
    ) -> None:
        self.pipe, self.port, self.tracked = pipe, port, tracked
        self.first, self.count, self.per_connection = first, count, per_connection
        self.acks: dict[str, list[float]] = {}  # version: [clients that ACKed it, latest time]
        self.walked = 0
        self.done = asyncio.Event()

    def handle(self, clients: dict[int, AdsClient], event: Event) -> None:
        client = clients.get(event.stream_id)
        if client is None:
            return
        if event.kind == "ended":
            clients.pop(event.stream_id)
            self.fail(f"client {client.node_id}: stream ended: {event.status} {event.detail}")
            return
        walked = client.walked
        version = client.received(event.data)
        if client.walked and not walked:
            self.walked += 1
            if self.walked == self.count:
                self.pipe.send(("walked", time.monotonic()))
        if version is not None:
            tally = self.acks.setdefault(version, [0, 0.0])
            tally[0] += 1
            tally[1] = max(tally[1], client.acked_routes[version])
            if tally[0] == self.count:
                self.pipe.send(("acked", version, tally[1]))

    def fail(self, why: str) -> None:
        if not self.done.is_set():
            self.pipe.send(("failed", why))
            self.done.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.pipe.fileno(), self.done.set)  # the parent says stop (or went away)
        protocols: list[_Protocol] = []
        for start in range(0, self.count, self.per_connection):
            connection = Connection(f"127.0.0.1:{self.port}", ADS_PATH)
            protocol = _Protocol(self, connection)
            await loop.create_connection(functools.partial(_same, protocol), "127.0.0.1", self.port)
            for index in range(start, min(start + self.per_connection, self.count)):
                node_id = f"proxyless~127.0.0.1~bench-{self.first + index}.default~default.svc.cluster.local"
                client = AdsClient(node_id, connection, tracked=self.tracked)
                client.start()
                protocol.clients[client.stream_id] = client
            protocol.flush()
            protocols.append(protocol)
        await self.done.wait()
        for protocol in protocols:
            protocol.clients.clear()
            if protocol.transport is not None:
                protocol.transport.close()


def work(
    pipe: Pipe, port: int, first: int, count: int, per_connection: int, tracked: str = types.ROUTE
) -> None:
    """A worker process's entry point: ready, then wait for "go", then run until told to stop."""
    pipe.send(("ready",))
    if pipe.recv() != "go":
        return
    asyncio.run(Worker(pipe, port, first, count, per_connection, tracked).run())
