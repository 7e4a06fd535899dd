"""Upstream HTTP/1.1 connections, pooled per endpoint with keep-alive: the ``send`` function the
engine calls for one attempt. Failures become :class:`~tulle.engine.message.UpstreamError` with
what happened (refused, timed out, reset)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

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
from tulle.transport.interception import marked_socket

READ_SIZE = 65536


@dataclass
class Connection:
    """One keep-alive connection to an endpoint."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: int = 0
    idle_since: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        """Close it."""
        with contextlib.suppress(Exception):
            self.writer.close()


class _StaleConnectionError(Exception):
    """A reused connection was closed by the upstream before it answered: try a fresh one."""


class Http1Pool:
    """Idle connections by endpoint; a connection is reused until the upstream or the cluster's
    ``max_requests_per_connection`` / ``idle_timeout`` says otherwise."""

    def __init__(self, mark: int | None = None) -> None:
        self.idle: dict[str, list[Connection]] = {}
        self.opened = 0
        self.mark = mark

    async def _connect(
        self, address: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.mark is None:
            return await asyncio.open_connection(address, port, limit=READ_SIZE)
        sock = marked_socket(self.mark)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=READ_SIZE)

    async def _open(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> Connection:
        try:
            async with asyncio.timeout(cluster.connect_timeout):
                reader, writer = await self._connect(endpoint.address, endpoint.port)
        except TimeoutError:
            raise UpstreamError(
                "connect", f"timed out after {cluster.connect_timeout:g}s"
            ) from None
        except ConnectionRefusedError:
            raise UpstreamError("connect", "refused") from None
        except OSError as error:
            raise UpstreamError("connect", error.strerror or str(error)) from None
        self.opened += 1
        return Connection(reader, writer)

    def _take_idle(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> Connection | None:
        idle = self.idle.get(endpoint.key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            fresh = now - connection.idle_since < cluster.idle_timeout
            if fresh and not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()
        return None

    async def send(
        self, endpoint: EndpointSpec, cluster: ClusterSpec, request: Request
    ) -> Response:
        """One request to ``endpoint``; the body of the answer is read whole."""
        connection = self._take_idle(endpoint, cluster)
        reused = connection is not None
        if connection is None:
            connection = await self._open(endpoint, cluster)
        try:
            return await self._exchange(connection, endpoint, cluster, request)
        except _StaleConnectionError:
            if not reused:
                raise UpstreamError("reset", "connection closed before a response") from None
            connection = await self._open(endpoint, cluster)
            try:
                return await self._exchange(connection, endpoint, cluster, request)
            except _StaleConnectionError:
                raise UpstreamError("reset", "connection closed before a response") from None

    async def _exchange(
        self, connection: Connection, endpoint: EndpointSpec, cluster: ClusterSpec, request: Request
    ) -> Response:
        headers = [
            (k, v) for k, v in end_to_end(request.headers) if k not in ("host", "content-length")
        ]
        headers.insert(0, ("host", request.authority))
        if request.body or request.method in ("POST", "PUT", "PATCH"):
            headers.append(("content-length", str(len(request.body))))
        connection.writer.write(request_head(request.method, request.path, headers) + request.body)
        parser = ResponseParser(head_request=request.method == "HEAD")
        try:
            head, body, reusable = await _read_response(connection, parser)
        except asyncio.CancelledError:
            connection.close()
            raise
        connection.used += 1
        limit = cluster.max_requests_per_connection
        if reusable and (limit is None or connection.used < limit):
            connection.idle_since = time.monotonic()
            self.idle.setdefault(endpoint.key, []).append(connection)
        else:
            connection.close()
        return Response(head.status, end_to_end(head.headers), body)

    def close(self) -> None:
        """Close every idle connection."""
        for connections in self.idle.values():
            for connection in connections:
                connection.close()
        self.idle.clear()


async def _read_response(
    connection: Connection, parser: ResponseParser
) -> tuple[ResponseHead, bytes, bool]:
    """The response head, its whole body, and whether the connection can be reused."""
    head: ResponseHead | None = None
    chunks: list[bytes] = []
    received = False
    try:
        while True:
            data = await connection.reader.read(READ_SIZE)
            received = received or bool(data)
            events = parser.feed(data) if data else parser.feed_eof()
            for event in events:
                if isinstance(event, ResponseHead) and not 100 <= event.status < 200:
                    head = event
                elif isinstance(event, Body):
                    chunks.append(event.data)
                elif isinstance(event, EndOfMessage) and head is not None:
                    return head, b"".join(chunks), head.keep_alive
                elif isinstance(event, ProtocolError):
                    connection.close()
                    raise UpstreamError("reset", event.reason)
            if not data:
                connection.close()
                if not received:
                    raise _StaleConnectionError
                if head is not None:
                    return head, b"".join(chunks), False  # a body delimited by the close
                raise UpstreamError("reset", "connection closed mid-response")
    except (ConnectionResetError, BrokenPipeError) as error:
        connection.close()
        if not received:
            raise _StaleConnectionError from None
        raise UpstreamError("reset", str(error) or "connection reset") from None
