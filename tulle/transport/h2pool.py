"""Upstream HTTP/2 (gRPC): multiplexed connections per endpoint, h2 for framing. A request's
whole answer — headers, body, trailers — comes back as one Response.

Connections follow Envoy's HTTP/2 pool: an endpoint's connection carries every stream until it
runs out of streams (the server's SETTINGS_MAX_CONCURRENT_STREAMS) or has carried the cluster's
``max_requests_per_connection``; then another is opened, unless the cluster already has
``max_connections`` open — the request then waits for a stream as a pending request (within
``max_pending``), or overflows. An endpoint with no connection always gets one, even over the
limit, so no endpoint is starved by others' connections (Envoy does the same)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tulle.codec.h2_connection import BoundedH2Connection
from tulle.codec.http2 import (
    Goaway,
    GoawayFilter,
    H2Sender,
    text_headers,
    wire_headers,
)
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.connection_options import PingSpec
from tulle.engine.message import ByteStream, Request, Response, UpstreamError
from tulle.transport.connect import set_keepalive
from tulle.transport.mtls import MeshTls, open_mesh_upstream, peer_principal

REFUSED_STREAM = 7


@dataclass
class _Stream:
    waiter: asyncio.Future[Response]
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    body: ByteStream | None = None  # set once the response is handed over while still open


class H2Upstream(asyncio.Protocol):
    """One HTTP/2 connection to an endpoint, many streams."""

    def __init__(self) -> None:
        # Headers as bytes both ways (text_headers and wire_headers: latin-1), so what a
        # client sent reaches the upstream byte for byte.
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = BoundedH2Connection(config=config)
        self.sender = H2Sender(self.conn)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self._forwarders: set[asyncio.Task[None]] = set()
        self.started = 0  # requests begun on this connection
        self.max_requests: int | None = None  # then it drains: no new streams, closed when idle
        self.goaway_filter = GoawayFilter()
        self.going_away = False  # the upstream sent GOAWAY: it drains too
        # Told when a stream ends (a waiting request may go on) and, once, when the connection
        # closes (its slot in the cluster's max_connections is free).
        self.stream_ended: Callable[[], None] | None = None
        self.released: Callable[[], None] | None = None
        self.peer_principal: str | None = None  # the SPIFFE id the upstream proved over mTLS
        # HTTP/2 PINGs (a DestinationRule's http2KeepAlive): the next one to send, or the
        # deadline of the one sent, and its payload.
        self.pings: PingSpec | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_payload = b""
        self._pings_sent = 0

    def start_pings(self, pings: PingSpec) -> None:
        """A PING every ``pings.interval`` seconds; one unanswered for ``pings.timeout``
        closes the connection (its streams fail: the upstream is gone)."""
        self.pings = pings
        self._ping_later()

    def _ping_later(self) -> None:
        pings = self.pings
        if pings is not None and not self.closed:
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(pings.interval, self._ping)

    def _ping(self) -> None:
        pings = self.pings
        if pings is None or self.closed:
            return
        self._pings_sent += 1
        self._ping_payload = self._pings_sent.to_bytes(8, "big")
        self.conn.ping(self._ping_payload)
        self._flush()
        self._ping_timer = asyncio.get_running_loop().call_later(pings.timeout, self._unanswered)

    def _unanswered(self) -> None:
        assert self.pings is not None
        self._ping_timer = None
        why = f"upstream did not answer an HTTP/2 PING within {self.pings.timeout:g}s"
        self._fail_all(UpstreamError("reset", why))
        self.close()

    def _ping_answered(self, payload: bytes) -> None:
        if payload != self._ping_payload or self._ping_timer is None:
            return
        self._ping_timer.cancel()
        self._ping_later()

    def _stop_pings(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer_principal = peer_principal(transport)
        self.conn.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    @property
    def draining(self) -> bool:
        """It has carried its ``max_requests``, or the upstream is going away: no new
        streams."""
        if self.going_away:
            return True
        return self.max_requests is not None and self.started >= self.max_requests

    @property
    def usable(self) -> bool:
        """Open, not told to go away, not draining, and with a stream free."""
        return (
            not self.closed
            and not self.draining
            and self.conn.open_outbound_streams < self.conn.remote_settings.max_concurrent_streams
        )

    def _ended(self) -> None:
        """Streams ended: a draining connection with none left closes; waiters are told."""
        if self.draining and not self.streams and not self.closed:
            self.close()
        if self.stream_ended is not None:
            self.stream_ended()

    def _release(self) -> None:
        released, self.released = self.released, None
        if released is not None:
            released()

    def data_received(self, data: bytes) -> None:
        open_streams = len(self.streams)
        data, goaways = self.goaway_filter.feed(data)
        if data:
            self._receive(data)
        for goaway in goaways:
            self._going_away(goaway)
        if len(self.streams) < open_streams or goaways:
            self._ended()

    def _going_away(self, goaway: Goaway) -> None:
        """The upstream sent GOAWAY: streams up to its last stream id finish here (h2 never
        sees the GOAWAY, see GoawayFilter); later ones were never processed, so they fail as
        refused (safe to retry); no new stream starts; the connection closes once idle."""
        self.going_away = True
        for stream_id in [i for i in self.streams if i > goaway.last_stream_id]:
            stream = self.streams.pop(stream_id)
            self.sender.forget(stream_id)
            refused = UpstreamError(
                "refused-stream",
                f"upstream sent GOAWAY (code {goaway.error_code}) before it took the request",
            )
            if stream.body is not None:
                stream.body.finish(refused)
            elif not stream.waiter.done():
                stream.waiter.set_exception(refused)

    def _events(self, data: bytes) -> list[h2.events.Event] | None:
        """h2's events for ``data``; None when h2 refuses them (every stream fails, the
        connection closes)."""
        try:
            return self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self._fail_all(UpstreamError("reset", f"HTTP/2 protocol error: {error}"))
            self.close()
            return None

    def _receive(self, data: bytes) -> None:
        events = self._events(data)
        if events is None:
            return
        for event in events:
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived) and stream is not None:
                headers = text_headers(event.headers)
                stream.status = int(dict(headers).get(":status", "502"))
                stream.headers = [(k, v) for k, v in headers if not k.startswith(":")]
                if event.stream_ended is None and not stream.waiter.done():
                    # More is coming: hand the response over now and stream its body (server
                    # streaming); trailers are filled in before the body ends.
                    stream.body = ByteStream()
                    response = Response(
                        stream.status, stream.headers, stream.body, trailers=stream.trailers,
                        upstream_principal=self.peer_principal,
                    )  # fmt: skip
                    response.discard = self._discarder(event.stream_id)
                    stream.waiter.set_result(response)
            elif isinstance(event, h2.events.DataReceived):
                if stream is not None:
                    if stream.body is not None:
                        stream.body.push(event.data)
                    else:
                        stream.data.extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
                stream.trailers.extend(text_headers(event.headers))
            elif isinstance(event, h2.events.StreamEnded) and stream is not None:
                self.streams.pop(event.stream_id, None)
                if stream.body is not None:
                    stream.body.finish()
                elif not stream.waiter.done():
                    stream.waiter.set_result(
                        Response(
                            stream.status,
                            stream.headers,
                            bytes(stream.data),
                            trailers=stream.trailers,
                            upstream_principal=self.peer_principal,
                        )
                    )
            elif isinstance(event, h2.events.StreamReset) and stream is not None:
                self.streams.pop(event.stream_id, None)
                self.sender.forget(event.stream_id)
                kind = "refused-stream" if event.error_code == REFUSED_STREAM else "reset"
                reset = UpstreamError(kind, f"stream reset (code {event.error_code})")
                if stream.body is not None:
                    stream.body.finish(reset)
                elif not stream.waiter.done():
                    stream.waiter.set_exception(
                        UpstreamError(kind, f"stream reset (code {event.error_code})")
                    )
            elif isinstance(event, h2.events.WindowUpdated):
                self.sender.pump(event.stream_id or None)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.sender.pump()  # a new initial window size changes every stream's window
            elif isinstance(event, h2.events.PingAckReceived):
                self._ping_answered(event.ping_data)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_pings()
        self._fail_all(UpstreamError("reset", "connection closed"))
        self._release()  # its slot is free: waiters are told

    async def _forward(self, stream_id: int, body: ByteStream) -> None:
        try:
            async for chunk in body:
                if stream_id not in self.streams or self.closed:
                    return
                self.sender.append(stream_id, chunk)
                self._flush()
            self.sender.close(stream_id, None)
        except UpstreamError as failure:
            self._cancel(stream_id, failure)  # the client went away, or its body failed
            return
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._flush()

    def _cancel(self, stream_id: int, why: UpstreamError | None = None) -> None:
        """Forget a stream and tell the upstream (RST_STREAM CANCEL); whoever still waits for
        its response, or reads its body, gets an error (``why``) instead of waiting
        forever."""
        stream = self.streams.pop(stream_id, None)
        error = why or UpstreamError("reset", "stream cancelled")
        if stream is not None and not stream.waiter.done():
            stream.waiter.set_exception(error)
        if stream is not None and stream.body is not None:
            stream.body.finish(error)
        if not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.reset_stream(stream_id, error_code=8)  # CANCEL
            self._flush()
        if stream is not None:
            self._ended()

    def _discarder(self, stream_id: int) -> Callable[[], Awaitable[None]]:
        async def discard() -> None:
            self._cancel(stream_id)

        return discard

    def _fail_all(self, error: UpstreamError) -> None:
        for stream in self.streams.values():
            if stream.body is not None:
                stream.body.finish(error)
            if not stream.waiter.done():
                stream.waiter.set_exception(error)
        self.streams.clear()

    def close(self) -> None:
        """Close the connection."""
        self.closed = True
        self._stop_pings()
        if self.transport is not None:
            self.transport.close()
        self._release()

    async def request(self, request: Request) -> Response:
        """One request on a new stream."""
        self.started += 1
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (":method", request.method),
            (":scheme", "http"),
            (":path", request.path),
            (":authority", request.authority),
        ]
        headers += [(k, v) for k, v in request.headers if k not in ("host", "content-length", "te")]
        if request.is_grpc:
            headers.append(("te", "trailers"))
        body = request.body
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.streams[stream_id] = _Stream(waiter)
        try:
            if isinstance(body, bytes):
                self.conn.send_headers(stream_id, wire_headers(headers), end_stream=not body)
                if body:
                    self.sender.send(stream_id, body, None)
            else:  # streamed: forward each piece as the client sends it
                self.conn.send_headers(stream_id, wire_headers(headers))
                forwarder = asyncio.get_running_loop().create_task(self._forward(stream_id, body))
                self._forwarders.add(forwarder)
                forwarder.add_done_callback(self._forwarders.discard)
        except h2.exceptions.ProtocolError as error:
            self.streams.pop(stream_id, None)
            raise UpstreamError("reset", f"HTTP/2 protocol error: {error}") from None
        self._flush()
        try:
            return await waiter
        except asyncio.CancelledError:
            self._cancel(stream_id)
            raise


class H2Pool:
    """Multiplexed HTTP/2 connections per endpoint, within each cluster's ``max_connections``
    (counted per cluster here: ``open`` and ``pending`` by cluster name)."""

    def __init__(self, mark: int | None = None) -> None:
        self.connections: dict[str, list[H2Upstream]] = {}
        self.open: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.mark = mark
        self.mtls: MeshTls | None = None  # set by Http1Pool.use_mtls
        self._opening: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    async def send(
        self, endpoint: EndpointSpec, cluster: ClusterSpec, request: Request
    ) -> Response:
        """One request over a connection to the endpoint (opened if needed and allowed)."""
        connection = await self._connection(endpoint, cluster)
        return await connection.request(request)  # its stream is taken before any await

    async def _connection(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> H2Upstream:
        """A connection with a stream free: an open one, a new one, or — at the cluster's
        ``max_connections`` — the first to free a stream, waited for as a pending request."""
        lock = self._opening.setdefault(endpoint.pool_key, asyncio.Lock())
        while True:
            async with lock:  # one connection opened at a time per endpoint
                held = [c for c in self.connections.get(endpoint.pool_key, ()) if not c.closed]
                self.connections[endpoint.pool_key] = held
                for connection in held:
                    if connection.usable:
                        return connection
                limit = cluster.limits.max_connections
                if not held or limit is None or self.open.get(cluster.name, 0) < limit:
                    connection = await self._open(endpoint, cluster)
                    held.append(connection)
                    return connection
            await self._wait_pending(cluster, limit)

    async def _wait_pending(self, cluster: ClusterSpec, limit: int) -> None:
        """Wait, as a pending request, until a stream ends or a connection closes in the
        cluster; with ``max_pending`` already waiting, overflow."""
        name = cluster.name
        waiting = self.pending.get(name, 0)
        if cluster.limits.max_pending is not None and waiting >= cluster.limits.max_pending:
            raise UpstreamError("overflow", f"max connections {limit}")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(waiter)
        self.pending[name] = waiting + 1
        try:
            await waiter
        finally:
            self.pending[name] -= 1

    def _wake(self, cluster: str) -> None:
        for waiter in self._waiting.pop(cluster, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def _open(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> H2Upstream:
        connection = await open_mesh_upstream(
            H2Upstream, endpoint, cluster.connect_timeout, self.mark, self.mtls
        )
        name = cluster.name
        self.open[name] = self.open.get(name, 0) + 1
        connection.max_requests = cluster.max_requests_per_connection
        if cluster.tcp_keepalive is not None:
            set_keepalive(connection.transport, cluster.tcp_keepalive)
        if cluster.pings is not None:
            connection.start_pings(cluster.pings)

        def released() -> None:
            self.open[name] -= 1
            self._wake(name)

        connection.released = released
        connection.stream_ended = lambda: self._wake(name)
        return connection

    def close(self) -> None:
        """Close every connection."""
        for held in self.connections.values():
            for connection in held:
                connection.close()
        self.connections.clear()
