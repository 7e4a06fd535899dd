"""Upstream HTTP/1.1 connections, pooled per endpoint with keep-alive: the ``send`` function the
engine calls for one attempt. Each connection is an asyncio Protocol feeding a sans-IO response
parser (no stream objects on the hot path). Failures become
:class:`~tulle.engine.message.UpstreamError` saying what happened (refused, timed out, reset)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from tulle.codec.http1 import (
    Body,
    EndOfMessage,
    ProtocolError,
    ResponseHead,
    ResponseParser,
    end_to_end,
    request_head,
)
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.message import Request, Response, UpstreamError
from tulle.transport.connect import open_upstream
from tulle.transport.h2pool import H2Pool

STREAM_THRESHOLD = 256 * 1024  # bodies larger than this, or of unknown length, are streamed
QUEUE_HIGH, QUEUE_LOW = 16, 4  # chunks buffered before reading from the upstream pauses


class BodyStream:
    """A response body arriving from the upstream, read as it comes (async iterator). The
    upstream's reading pauses while the reader falls behind."""

    def __init__(self, connection: UpstreamConnection) -> None:
        self.connection = connection
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self.paused = False

    def push(self, data: bytes) -> None:
        self.queue.put_nowait(data)
        transport = self.connection.transport
        if self.queue.qsize() > QUEUE_HIGH and transport is not None and not self.paused:
            self.paused = True
            transport.pause_reading()

    def finish(self, error: BaseException | None = None) -> None:
        self.queue.put_nowait(error)

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        item = await self.queue.get()
        transport = self.connection.transport
        if self.paused and self.queue.qsize() < QUEUE_LOW and transport is not None:
            self.paused = False
            transport.resume_reading()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item


Exchange = tuple[ResponseHead, bytes | BodyStream, bool]


class _StaleConnectionError(Exception):
    """A reused connection was closed by the upstream before it answered: try a fresh one."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an endpoint, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.waiter: asyncio.Future[Exchange] | None = None
        self.head: ResponseHead | None = None
        self.chunks: list[bytes] = []
        self.received = False
        self.closed = False
        self.used = 0
        self.idle_since = time.monotonic()
        self.stream: BodyStream | None = None
        self.released: Callable[[UpstreamConnection, bool], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        waiter = self.waiter
        for event in self.parser.feed(data):
            if isinstance(event, ResponseHead):
                if not 100 <= event.status < 200:
                    self.head = event
                    if _should_stream(event, self.parser) and waiter is not None:
                        self.stream = BodyStream(self)
                        waiter.set_result((event, self.stream, event.keep_alive))
                        self.waiter = None
            elif isinstance(event, Body):
                if self.stream is not None:
                    self.stream.push(event.data)
                else:
                    self.chunks.append(event.data)
            elif isinstance(event, EndOfMessage) and self.head is not None:
                if self.stream is not None:
                    self.stream.finish()
                    self.stream = None
                    if self.released is not None:
                        self.released(self, self.head.keep_alive)
                elif waiter is not None and not waiter.done():
                    waiter.set_result((self.head, b"".join(self.chunks), self.head.keep_alive))
                self.waiter = None
            elif isinstance(event, ProtocolError):
                self._fail(UpstreamError("reset", event.reason))
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream is not None:
            framed = self.head is not None and any(
                k in ("content-length", "transfer-encoding") for k, _ in self.head.headers
            )
            cut = UpstreamError("reset", "connection closed mid-body")
            self.stream.finish(cut if framed else None)
            self.stream = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if not self.received:
            waiter.set_exception(_StaleConnectionError())
        elif self.head is not None and not any(
            k in ("content-length", "transfer-encoding") for k, _ in self.head.headers
        ):
            waiter.set_result((self.head, b"".join(self.chunks), False))  # delimited by the close
        else:
            waiter.set_exception(UpstreamError("reset", "connection closed mid-response"))

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def close(self) -> None:
        """Close it."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, payload: bytes, head_request: bool) -> Exchange:
        """Send one request and wait for the whole response."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _StaleConnectionError
        if head_request or self.parser.failed or (self.used and self._needs_new_parser):
            self.parser = ResponseParser(head_request=head_request)
        self._needs_new_parser = head_request
        self.head, self.chunks, self.received = None, [], False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        try:
            return await self.waiter
        except asyncio.CancelledError:
            self.close()
            raise

    _needs_new_parser = False


def _should_stream(head: ResponseHead, parser: ResponseParser) -> bool:
    """Stream bodies of unknown length or larger than STREAM_THRESHOLD; buffer the rest."""
    if parser.head_request or head.status in (204, 304):
        return False
    length = next((v for k, v in head.headers if k == "content-length"), None)
    return length is None or int(length) > STREAM_THRESHOLD


class Http1Pool:
    """Idle connections by endpoint; a connection is reused until the upstream or the cluster's
    ``max_requests_per_connection`` / ``idle_timeout`` says otherwise. ``mark`` sets SO_MARK on
    the proxy's own connections so interception rules let them pass."""

    def __init__(self, mark: int | None = None) -> None:
        self.idle: dict[str, list[UpstreamConnection]] = {}
        self.opened = 0
        self.mark = mark
        self.h2 = H2Pool(mark)

    async def _open(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> UpstreamConnection:
        connection = await open_upstream(
            UpstreamConnection, endpoint.address, endpoint.port, cluster.connect_timeout, self.mark
        )
        self.opened += 1
        return connection

    def _take_idle(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> UpstreamConnection | None:
        idle = self.idle.get(endpoint.key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < cluster.idle_timeout:
                return connection
            connection.close()
        return None

    async def send(
        self, endpoint: EndpointSpec, cluster: ClusterSpec, request: Request
    ) -> Response:
        """One request to ``endpoint``; the body of the answer is read whole. A request that
        came in over HTTP/2 (gRPC) goes out over HTTP/2."""
        if request.http2:
            return await self.h2.send(endpoint, cluster, request)
        # The front end already dropped hop-by-hop headers from the request.
        headers = [(k, v) for k, v in request.headers if k not in ("host", "content-length")]
        headers.insert(0, ("host", request.authority))
        if request.body or request.method in ("POST", "PUT", "PATCH"):
            headers.append(("content-length", str(len(request.body))))
        payload = request_head(request.method, request.path, headers) + request.body
        head_request = request.method == "HEAD"
        connection = self._take_idle(endpoint, cluster)
        if connection is not None:
            try:
                return self._finish(
                    endpoint, cluster, connection, await connection.exchange(payload, head_request)
                )
            except _StaleConnectionError:
                pass  # closed by the upstream while idle: once more on a fresh connection
        connection = await self._open(endpoint, cluster)
        try:
            exchange = await connection.exchange(payload, head_request)
        except _StaleConnectionError:
            raise UpstreamError("reset", "connection closed before a response") from None
        return self._finish(endpoint, cluster, connection, exchange)

    def _finish(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        connection: UpstreamConnection,
        exchange: Exchange,
    ) -> Response:
        head, body, reusable = exchange
        connection.used += 1
        if isinstance(body, BodyStream):
            # Back to the pool when the body has been read to its end; closed if abandoned.
            def release(conn: UpstreamConnection, keep: bool) -> None:
                self._give_back(endpoint, cluster, conn, keep)

            async def abandon() -> None:
                connection.close()

            connection.released = release
            return Response(head.status, end_to_end(head.headers), body, discard=abandon)
        self._give_back(endpoint, cluster, connection, reusable)
        return Response(head.status, end_to_end(head.headers), body)

    def _give_back(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        connection: UpstreamConnection,
        reusable: bool,
    ) -> None:
        limit = cluster.max_requests_per_connection
        if reusable and not connection.closed and (limit is None or connection.used < limit):
            connection.idle_since = time.monotonic()
            self.idle.setdefault(endpoint.key, []).append(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        self.h2.close()
        for connections in self.idle.values():
            for connection in connections:
                connection.close()
        self.idle.clear()
