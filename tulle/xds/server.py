"""The gRPC adapter of the ADS server: grpcio's asyncio server and one
:class:`~tulle.xds.session.AdsSession` per stream. What to serve comes from a
:class:`~tulle.xds.offers.ResourceSource` through a shared :class:`~tulle.xds.offers.Catalog`;
this module only moves messages.

Each stream has two tasks: a reader, which decides on each request what is due (synchronously,
in the session), and the call's own task, which writes what the reader or a push queued in the
stream's :class:`Outbox`. Messages cross grpcio as bytes: requests are parsed here, responses are
the catalog's shared bytes with the stream's nonce appended."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError

from tulle.xds.limits import raise_open_files_limit
from tulle.xds.node import NodeIdError, NodeInfo, parse_node_id
from tulle.xds.offers import Catalog, ResourceSource, ShareKey, serialize, share_key, with_nonce
from tulle.xds.session import AdsSession, Request, TypeState

__all__ = ["AdsServer", "Connection", "ResourceSource", "serialize", "start_server", "to_json"]

log = logging.getLogger(__name__)

SERVICE: Final = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHOD: Final = "StreamAggregatedResources"

# grpcio queues a new call until the asyncio server takes it (one call per turn of the event
# loop); past grpc.server.max_pending_requests (1,000 by default) it refuses new calls at random,
# and all of them past the hard limit (3,000), with RESOURCE_EXHAUSTED "Too many pending requests
# for this server". Proxies reconnecting after a control-plane restart open their ADS streams in
# one burst: they are queued, not refused.
MAX_PENDING_STREAMS: Final = 100_000
SERVER_OPTIONS: Final = (
    ("grpc.server.max_pending_requests", MAX_PENDING_STREAMS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_STREAMS),
)


class Outbox:
    """What a stream has to write, in order; ``close`` ends the stream (with a status when the
    client is at fault)."""

    __slots__ = ("_messages", "_waiter", "closed", "status")

    def __init__(self) -> None:
        self._messages: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.status: tuple[grpc.StatusCode, str] | None = None

    def put(self, message: bytes) -> None:
        """Queue a message and wake the writer."""
        self._messages.append(message)
        self._wake()

    def __len__(self) -> int:
        """Messages queued and not yet written."""
        return len(self._messages)

    def close(self, status: tuple[grpc.StatusCode, str] | None = None) -> None:
        """End the stream once what is queued is written."""
        if not self.closed:
            self.closed, self.status = True, status
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> bytes | None:
        """The next message, or None once the stream is closed and everything was written."""
        while not self._messages:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        return self._messages.popleft()


@dataclass(eq=False, slots=True)
class Connection:
    """A connected node: its session, and the outbox its stream writes from."""

    node: NodeInfo
    session: AdsSession
    peer: str
    outbox: Outbox
    share: ShareKey
    connected_at: float = field(default_factory=time.time)
    node_error: str | None = None


class AdsServer:
    """Serves ADS state of the world to every connected node."""

    def __init__(self, source: ResourceSource) -> None:
        self.source = source
        self.catalog = Catalog(source)
        self.connections: dict[int, Connection] = {}
        self._ids = 0

    def push(self) -> None:
        """The source changed: send every stream what changed for it."""
        self.catalog.clear()
        for connection in self.connections.values():
            for type_url, state in connection.session.types.items():
                self._offer(connection, type_url, state)

    def _offer(self, connection: Connection, type_url: str, state: TypeState) -> None:
        offer = self.catalog.offer(connection.share, connection.node, type_url, state.selection)
        response = connection.session.respond(offer)
        if response is not None:
            connection.outbox.put(with_nonce(offer.body, response.nonce))

    def handler(self) -> grpc.GenericRpcHandler:
        """The ADS service for ``server.add_generic_rpc_handlers`` (bytes in, bytes out)."""
        method = grpc.stream_stream_rpc_method_handler(self.stream)
        return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})

    async def stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[bytes, None]:
        """One ADS stream: write what the reader and pushes queue until the stream ends."""
        self._ids += 1
        key = self._ids
        outbox = Outbox()
        reader = asyncio.create_task(self._read(key, requests, context.peer(), outbox))
        try:
            while (message := await outbox.get()) is not None:
                yield message
            if outbox.status is not None:
                await context.abort(*outbox.status)
        finally:
            reader.cancel()
            self.connections.pop(key, None)

    async def _read(
        self, key: int, requests: AsyncIterator[bytes], peer: str, outbox: Outbox
    ) -> None:
        connection: Connection | None = None
        try:
            async for data in requests:
                try:
                    message = discovery_pb2.DiscoveryRequest.FromString(data)
                except DecodeError as error:
                    outbox.close((grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {error}"))
                    return
                if connection is None:
                    connection = self.connections[key] = _connect(message, peer, outbox)
                request = _request(message)
                connection.session.receive(request)
                state = connection.session.types[request.type_url]
                self._offer(connection, request.type_url, state)
        except (grpc.aio.AioRpcError, grpc.RpcError) as error:
            log.debug("ADS stream %s ended: %s", peer, error)
        except Exception:
            log.exception("ADS stream %s: cannot handle a request", peer)
            outbox.close((grpc.StatusCode.INTERNAL, "the control plane failed on this request"))
        finally:
            outbox.close()


def _connect(first: Any, peer: str, outbox: Outbox) -> Connection:
    node_id = first.node.id
    error = None
    try:
        node = parse_node_id(node_id)
    except NodeIdError as problem:
        error = str(problem)
        node = NodeInfo(node_id or "<no node id>", "proxyless", "", node_id or "unknown", "default")
    return Connection(node, AdsSession(node.id), peer, outbox, share_key(node), node_error=error)


def _request(message: Any) -> Request:
    error = message.error_detail.message if message.HasField("error_detail") else None
    return Request(
        type_url=message.type_url,
        names=frozenset(message.resource_names),
        version=message.version_info,
        nonce=message.response_nonce,
        error=error,
    )


def to_json(message: Any) -> dict[str, Any]:
    """A resource as protobuf JSON (the shape of Envoy's config_dump)."""
    data: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=False)
    return data


async def start_server(server_impl: AdsServer, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start a grpcio asyncio server with ADS on ``host:port`` (0: any free port). It holds a
    socket per connected node: the process's open-files limit is raised first."""
    raise_open_files_limit()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((server_impl.handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for xDS on {host}:{port}")
    await server.start()
    return server, bound
