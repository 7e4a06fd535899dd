"""The gRPC adapter of the ADS server: grpcio's asyncio server, the ``xds-protos`` stubs, and one
:class:`~tulle.xds.session.AdsSession` per stream. What to serve comes from a
:class:`ResourceSource`; this module only moves messages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.json_format import MessageToDict

from tulle.xds.node import NodeIdError, NodeInfo, parse_node_id
from tulle.xds.session import AdsSession, Request, Response

log = logging.getLogger(__name__)


class ResourceSource(Protocol):
    """Where the server gets the resources for a node."""

    def resources(self, node: NodeInfo, type_url: str) -> Mapping[str, Any]:
        """Every resource of ``type_url`` the node may subscribe to, by name."""
        ...


def serialize(message: Any) -> bytes:
    """Deterministic bytes of a protobuf message (for versions)."""
    data: bytes = message.SerializeToString(deterministic=True)
    return data


@dataclass
class Connection:
    """A connected node: its session, and a queue that wakes its stream."""

    node: NodeInfo
    session: AdsSession
    peer: str
    connected_at: float = field(default_factory=time.time)
    node_error: str | None = None
    wake: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


_PUSH = object()


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves ADS state of the world to every connected node."""

    def __init__(self, source: ResourceSource) -> None:
        self.source = source
        self.connections: dict[int, Connection] = {}
        self._ids = 0

    def push(self) -> None:
        """Tell every stream the resources may have changed."""
        for connection in self.connections.values():
            connection.wake.put_nowait(_PUSH)

    def _response(self, connection: Connection, type_url: str) -> Any | None:
        available = self.source.resources(connection.node, type_url)
        response = connection.session.due(type_url, available, serialize)
        return None if response is None else _to_proto(response)

    async def StreamAggregatedResources(  # noqa: N802 - the gRPC method name
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """One ADS stream: read requests and pushes, write what is due."""
        self._ids += 1
        key = self._ids
        connection: Connection | None = None
        wake: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(_read(request_iterator, wake))
        try:
            while True:
                item = await wake.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    log.debug("ADS stream %s ended: %s", context.peer(), item)
                    return
                if connection is None:
                    connection = _connect(item, context.peer(), wake)
                    self.connections[key] = connection
                if item is _PUSH:
                    types = list(connection.session.types)
                else:
                    request = _from_proto(item)
                    connection.session.receive(request)
                    types = [request.type_url]
                for type_url in types:
                    message = self._response(connection, type_url)
                    if message is not None:
                        yield message
        finally:
            reader.cancel()
            self.connections.pop(key, None)


def _connect(first: Any, peer: str, wake: asyncio.Queue[Any]) -> Connection:
    node_id = first.node.id if first is not _PUSH else ""
    error = None
    try:
        node = parse_node_id(node_id)
    except NodeIdError as problem:
        error = str(problem)
        node = NodeInfo(node_id or "<no node id>", "proxyless", "", node_id or "unknown", "default")
    return Connection(node, AdsSession(node.id), peer, node_error=error, wake=wake)


async def _read(requests: AsyncIterator[Any], wake: asyncio.Queue[Any]) -> None:
    try:
        async for request in requests:
            wake.put_nowait(request)
    except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError) as error:
        wake.put_nowait(error if not isinstance(error, asyncio.CancelledError) else None)
        return
    wake.put_nowait(None)


def _from_proto(message: Any) -> Request:
    error = message.error_detail.message if message.HasField("error_detail") else None
    return Request(
        type_url=message.type_url,
        names=frozenset(message.resource_names),
        version=message.version_info,
        nonce=message.response_nonce,
        error=error,
    )


def _to_proto(response: Response) -> Any:
    resources = []
    for _, resource in response.resources:
        packed = any_pb2.Any()
        packed.Pack(resource)
        resources.append(packed)
    return discovery_pb2.DiscoveryResponse(
        version_info=response.version,
        resources=resources,
        type_url=response.type_url,
        nonce=response.nonce,
    )


def to_json(message: Any) -> dict[str, Any]:
    """A resource as protobuf JSON (the shape of Envoy's config_dump)."""
    data: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=False)
    return data


async def start_server(server_impl: AdsServer, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start a grpcio asyncio server with ADS on ``host:port`` (0: any free port)."""
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(server_impl, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for xDS on {host}:{port}")
    await server.start()
    return server, bound
