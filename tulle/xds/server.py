"""The gRPC adapter of the ADS server: grpcio's asyncio server and one
:class:`~tulle.xds.session.AdsSession` per stream. What to serve comes from a
:class:`~tulle.xds.offers.ResourceSource` through a shared :class:`~tulle.xds.offers.Catalog`;
this module only moves messages.

The call's own task reads the stream's requests and decides, synchronously in the session, what
is due; a push decides the same way for every stream at once. What is due goes to the stream's
:class:`Writer`, whose task lives only while it has something to write. Messages cross grpcio as
bytes: requests are parsed here, responses are the catalog's shared bytes with the stream's nonce
appended."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError

from tulle.xds.node import NodeIdError, NodeInfo, parse_node_id
from tulle.xds.offers import Catalog, ResourceSource, ShareKey, serialize, share_key, with_nonce
from tulle.xds.session import AdsSession, Offer, Request
from tulle.xds.subscribers import Subscribers
from tulle.xds.tuning import CollectorHold, raise_open_files_limit, raise_young_threshold

__all__ = ["AdsServer", "Connection", "ResourceSource", "serialize", "start_server", "to_json"]

log = logging.getLogger(__name__)

SERVICE: Final = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHOD: Final = "StreamAggregatedResources"

# grpcio queues a new call until the asyncio server takes it (one call per turn of the event
# loop); past grpc.server.max_pending_requests (1,000 by default) it cancels new calls at random,
# and all of them past the hard limit (3,000): "Too many pending requests for this server", seen
# by the client as CANCELLED. Proxies reconnecting after a control-plane restart open their ADS
# streams in one burst: they are queued, not refused.
MAX_PENDING_STREAMS: Final = 100_000
MAX_INTERNED: Final = 65_536  # distinct subscriptions shared between pushes
SERVER_OPTIONS: Final = (
    ("grpc.server.max_pending_requests", MAX_PENDING_STREAMS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_STREAMS),
)


class Writer:
    """Writes a stream's responses in order. Its task lives only while there is something to
    write: an idle stream holds no task of its own but the call's. ``busy`` is told +1 when the
    task starts and -1 when it ends."""

    __slots__ = ("_busy", "_context", "_queue", "_task")

    def __init__(self, context: grpc.aio.ServicerContext, busy: Callable[[int], None]) -> None:
        self._context = context
        self._busy = busy
        self._queue: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Messages queued and not yet written."""
        return len(self._queue)

    def put(self, message: bytes) -> None:
        """Queue a message; it is written after those queued before it."""
        self._queue.append(message)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
            self._busy(1)
            # -1 when the task is done, even cancelled before it ran (its finally would not run)
            self._task.add_done_callback(self._done)

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._context.write(self._queue.pop(0))
        except Exception as error:  # whatever ends the call ends the writing
            log.debug("ADS stream %s: write failed: %r", self._context.peer(), error)
            self._queue.clear()
        finally:
            self._task = None

    def _done(self, task: asyncio.Task[None]) -> None:
        self._busy(-1)

    async def flush(self) -> None:
        """Wait until everything queued is written."""
        while self._task is not None:
            await asyncio.shield(self._task)

    def cancel(self) -> None:
        """Drop what is queued (the stream is over)."""
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()


@dataclass(eq=False, slots=True)
class Connection:
    """A connected node: its session, and the writer of its stream."""

    node: NodeInfo
    session: AdsSession
    peer: str
    writer: Writer
    share: ShareKey
    connected_at: float = field(default_factory=time.time)
    node_error: str | None = None
    secure: bool = False  # over TLS, as a node that proved who it is


Authorize = Callable[[NodeInfo, Mapping[str, str], bool], str | Awaitable[str | None] | None]
"""Whether a stream may subscribe as a node: the node (from its first request), the call's
metadata, and whether the connection is TLS; None admits it, a text refuses it and says why
(or an awaitable of either, for a check that waits on something, such as a TokenReview)."""


class AdsServer:
    """Serves ADS state of the world to every connected node."""

    def __init__(self, source: ResourceSource, authorize: Authorize | None = None) -> None:
        self.source = source
        self.authorize = authorize
        self.catalog = Catalog(source)
        self.connections: dict[int, Connection] = {}
        self.subscribers: Subscribers[Connection] = Subscribers()
        self.holds_collector = False
        """Hold young collections off while a push's writes are in flight (:func:`start_server`
        turns it on: the process is then the server's; see :mod:`tulle.xds.tuning`)."""
        self._hold = CollectorHold()
        self._writing = 0  # streams whose writer has something to write
        self._ids = 0
        self._names: dict[frozenset[str], frozenset[str]] = {}  # one object per subscription

    def push(self) -> None:
        """The source changed: send every stream what changed for it."""
        self.catalog.clear()
        self._names.clear()
        if self.holds_collector:
            self._hold.hold(len(self.connections))
        for (share, type_url, selection), bucket in self.subscribers:
            anyone = next(iter(bucket.members.values()))
            offer = self.catalog.offer(share, anyone.node, type_url, selection)
            if offer.version == bucket.version:
                continue  # every member already had this version offered
            bucket.version = offer.version
            for connection in bucket.members.values():
                self._send(connection, offer)
        if not self._writing:
            self._hold.release()  # nothing changed for anyone

    def _busy(self, change: int) -> None:
        self._writing += change
        if not self._writing:
            self._hold.release()

    def _send(self, connection: Connection, offer: Offer) -> None:
        response = connection.session.respond(offer)
        if response is not None:
            connection.writer.put(with_nonce(offer.body, response.nonce))

    def _receive(self, key: int, connection: Connection, request: Request) -> None:
        session, share, type_url = connection.session, connection.share, request.type_url
        before = session.types.get(type_url)
        old = None if before is None else before.selection
        session.receive(request)
        new = session.types[type_url].selection
        offer = self.catalog.offer(share, connection.node, type_url, new)
        if new != old:
            self.subscribers.move(key, connection, share, type_url, old, new, offer.version)
        self._send(connection, offer)

    def _forget(self, key: int) -> None:
        connection = self.connections.pop(key, None)
        if connection is not None:
            for type_url, state in connection.session.types.items():
                self.subscribers.remove(key, connection.share, type_url, state.selection)

    def handler(self) -> grpc.GenericRpcHandler:
        """The ADS service for ``server.add_generic_rpc_handlers`` (bytes in, bytes out)."""
        method = grpc.stream_stream_rpc_method_handler(self.stream)
        return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})

    async def stream(self, requests: object, context: grpc.aio.ServicerContext) -> None:
        """One ADS stream: each request is answered with what is due (``requests`` is unused:
        the stream reads from ``context``)."""
        self._ids += 1
        key = self._ids
        writer = Writer(context, self._busy)
        connection: Connection | None = None
        try:
            while (data := await context.read()) is not grpc.aio.EOF:
                try:
                    request, node_id = self._parse(data)
                except DecodeError as error:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {error}")
                    return
                if connection is None:
                    connection = _connect(node_id, context.peer(), writer)
                    refusal = await self._refusal(connection, context)
                    if refusal is not None:
                        log.warning("ADS stream from %s refused: %s", context.peer(), refusal)
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
                        return
                    self.connections[key] = connection
                self._receive(key, connection, request)
            await writer.flush()  # the client is done sending: what is due still goes out
        finally:
            writer.cancel()
            self._forget(key)

    async def _refusal(
        self, connection: Connection, context: grpc.aio.ServicerContext
    ) -> str | None:
        """Why this stream may not subscribe as its node (None: it may)."""
        if self.authorize is None:
            return None
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        secure = context.auth_context().get("transport_security_type") == [b"ssl"]
        connection.secure = secure
        refusal = self.authorize(connection.node, metadata, secure)
        if refusal is None or isinstance(refusal, str):
            return refusal
        return await refusal

    def _parse(self, data: bytes) -> tuple[Request, str]:
        """A DiscoveryRequest's values, and the node id it names (only the first one must);
        the parsed message is not kept, and equal subscriptions share one set of names."""
        message = discovery_pb2.DiscoveryRequest.FromString(data)
        names = frozenset(message.resource_names)
        if len(self._names) >= MAX_INTERNED:
            self._names.clear()
        names = self._names.setdefault(names, names)
        error = message.error_detail.message if message.HasField("error_detail") else None
        request = Request(
            message.type_url, names, message.version_info, message.response_nonce, error
        )
        return request, message.node.id


def _connect(node_id: str, peer: str, writer: Writer) -> Connection:
    error = None
    try:
        node = parse_node_id(node_id)
    except NodeIdError as problem:
        error = str(problem)
        node = NodeInfo(node_id or "<no node id>", "proxyless", "", node_id or "unknown", "default")
    return Connection(node, AdsSession(node.id), peer, writer, share_key(node), node_error=error)


def to_json(message: Any) -> dict[str, Any]:
    """A resource as protobuf JSON (the shape of Envoy's config_dump)."""
    data: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=False)
    return data


async def start_server(
    server_impl: AdsServer,
    host: str,
    port: int,
    secure: tuple[int, grpc.ServerCredentials] | None = None,
    handlers: Sequence[grpc.GenericRpcHandler] = (),
) -> tuple[grpc.aio.Server, int, int | None]:
    """Start a grpcio asyncio server with ADS on ``host:port`` (0: any free port) and, with
    ``secure`` (a port and TLS credentials), on that port too; ``handlers`` (more services)
    are served on the secure port's server as well. It holds a socket per connected node: the
    process's open-files limit is raised first, and the cyclic collector set for many streams
    (see :mod:`tulle.xds.tuning`). Returns the server and the bound ports."""
    raise_open_files_limit()
    raise_young_threshold()
    server_impl.holds_collector = True
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((server_impl.handler(), *handlers))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for xDS on {host}:{port}")
    secure_bound = None
    if secure is not None:
        secure_bound = server.add_secure_port(f"{host}:{secure[0]}", secure[1])
        if secure_bound == 0:
            raise OSError(f"cannot listen for secure xDS on {host}:{secure[0]}")
    await server.start()
    return server, bound, secure_bound
