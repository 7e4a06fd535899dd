"""Upstream HTTP/1.1 connections (:mod:`tulle.transport.upstream`), pooled per endpoint with
keep-alive: the ``send`` function the engine calls for one attempt. The common case (an idle
connection, a body in memory) is answered by callback, with no task. Failures become
:class:`~tulle.engine.message.UpstreamError` saying what happened (refused, timed out, reset)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final, cast

from tulle.codec.http1 import end_to_end, request_head
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.message import ByteStream, Interim, Request, Response, UpstreamError
from tulle.engine.tasks import resolver, run_then
from tulle.transport.connect import set_keepalive
from tulle.transport.h2pool import H2Pool
from tulle.transport.mtls import MeshTls, open_mesh_upstream
from tulle.transport.upstream import (
    STREAM_THRESHOLD,
    Exchange,
    StaleConnectionError,
    Switched,
    UpstreamConnection,
)

__all__ = ["STREAM_THRESHOLD", "Exchange", "Http1Pool", "Switched", "UpstreamConnection"]

# Idle connections kept per endpoint: a burst of concurrent requests opens as many connections
# as it needs, and the ones beyond this are closed when given back instead of kept for good.
MAX_IDLE_PER_ENDPOINT: Final = 128


Outcome = Response | UpstreamError


class _Attempt:
    """One request on an idle connection, answered by callback (the pool's fast path): it is
    the connection's Waiter, and ``abandon`` ends it without a callback. A connection that
    turns out stale gets the request once more on a fresh one."""

    __slots__ = (
        "callback",
        "cluster",
        "connection",
        "endpoint",
        "finished",
        "fresh",
        "head_request",
        "interim",
        "payload",
        "pool",
    )  # fmt: skip

    def __init__(
        self,
        pool: Http1Pool,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        connection: UpstreamConnection,
        callback: Callable[[Outcome], None],
        payload: bytes,
        head_request: bool,
        interim: Interim | None,
    ) -> None:
        self.pool, self.endpoint, self.cluster = pool, endpoint, cluster
        self.connection, self.callback, self.payload = connection, callback, payload
        self.head_request, self.interim = head_request, interim
        self.finished = False
        self.fresh: Callable[[], None] | None = None  # cancels the retry on a fresh connection

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: Exchange, /) -> None:
        if not self.finished:
            self.finished = True
            self.callback(self.pool._finish(self.endpoint, self.cluster, self.connection, result))

    def set_exception(self, exception: BaseException, /) -> None:
        if self.finished:
            return
        self.finished = True
        if isinstance(exception, StaleConnectionError):  # once more, on a new connection
            again = self.pool._send_fresh(
                self.endpoint, self.cluster, self.payload, self.head_request, self.interim
            )
            self.fresh = run_then(_outcome(again), self.callback, _unexpected)
        elif isinstance(exception, UpstreamError):
            self.callback(exception)
        else:
            self.callback(UpstreamError("reset", str(exception)))

    def abandon(self) -> None:
        """No callback after this; the connection is closed (its answer would be stale)."""
        self.finished = True
        self.connection.close()
        if self.fresh is not None:
            self.fresh()


def _headers(request: Request) -> list[tuple[str, str]]:
    """The request's headers as they go upstream: Host first (from the authority), hop-by-hop
    headers already dropped by the front end, Content-Length set by the sender."""
    headers = [(k, v) for k, v in request.headers if k not in _SET_HERE]
    headers.insert(0, ("host", request.authority))
    return headers


_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_SET_HERE: Final = frozenset({"host", "content-length"})  # headers the pool writes itself


def _payload(request: Request, body: bytes) -> bytes:
    """A request with its body in memory, as bytes on the wire (what ``_headers`` and
    ``request_head`` would give, in one pass)."""
    lines = [f"{request.method} {request.path} HTTP/1.1\r\nhost: {request.authority}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in request.headers if k not in _SET_HERE]
    if body or request.method in _BODY_METHODS:
        lines.append(f"content-length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


async def _outcome(work: Awaitable[Response]) -> Outcome:
    """The response, or the UpstreamError raised instead."""
    try:
        return await work
    except UpstreamError as failure:
        return failure


def _unexpected(failure: BaseException) -> Outcome:
    return UpstreamError("reset", f"unexpected {failure!r}")


class Http1Pool:
    """Idle connections by endpoint; a connection is reused until the upstream or the cluster's
    ``max_requests_per_connection`` / ``idle_timeout`` says otherwise. ``mark`` sets SO_MARK on
    the proxy's own connections so interception rules let them pass."""

    def __init__(self, mark: int | None = None) -> None:
        self.idle: dict[str, list[UpstreamConnection]] = {}
        # Every open connection, idle or in use; each leaves as it closes. Not a WeakSet: the
        # compiled build's UpstreamConnection does not clear weak references to itself when
        # freed by its reference count (mypyc 2.4), and a closed connection is freed that way.
        self.every: set[UpstreamConnection] = set()
        self.opened = 0
        self.mark = mark
        self.h2 = H2Pool(mark)
        self.mtls: MeshTls | None = None
        self._unwritten: list[tuple[asyncio.Transport, bytes]] = []
        # The loop _write_soon schedules on, kept: asyncio.get_running_loop() makes a getpid()
        # system call each time (its check for a fork), ~0.25 µs per request on this VM.
        self._loop: asyncio.AbstractEventLoop | None = None

    def use_mtls(self, mtls: MeshTls) -> None:
        """Originate mutual TLS, with this workload's certificate, to endpoints in the mesh."""
        self.mtls = mtls
        self.h2.mtls = mtls

    async def _open(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> UpstreamConnection:
        connection = await open_mesh_upstream(
            UpstreamConnection, endpoint, cluster.connect_timeout, self.mark, self.mtls
        )
        self.opened += 1
        if cluster.tcp_keepalive is not None:
            set_keepalive(connection.transport, cluster.tcp_keepalive)
        if not connection.closed:
            connection.lost = self.every.discard
            self.every.add(connection)
        return connection

    def _take_idle(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> UpstreamConnection | None:
        idle = self.idle.get(endpoint.pool_key)
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
        """One request to ``endpoint``; the body of the answer is read whole. It goes out over
        the cluster's protocol (HTTP/2 for gRPC and HTTP2 ports), else over the client's."""
        if cluster.upstream_http2(request.http2):
            return await self.h2.send(endpoint, cluster, request)
        if not isinstance(request.body, bytes):
            return await self._send_streamed(endpoint, cluster, request, _headers(request))
        connection = self._take_idle(endpoint, cluster)
        if connection is None:
            payload = _payload(request, request.body)
            head_request = request.method == "HEAD"
            return await self._send_fresh(endpoint, cluster, payload, head_request, request.interim)
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        abandon = self._send_on(connection, endpoint, cluster, request, resolver(answer))
        try:
            outcome = await answer
        except asyncio.CancelledError:
            abandon()
            raise
        if isinstance(outcome, UpstreamError):
            raise outcome
        return outcome

    async def _send_fresh(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        payload: bytes,
        head_request: bool,
        interim: Interim | None = None,
    ) -> Response:
        connection = await self._open(endpoint, cluster)
        try:
            exchange = await connection.exchange(payload, head_request, interim)
        except StaleConnectionError:
            raise UpstreamError("reset", "connection closed before a response") from None
        return self._finish(endpoint, cluster, connection, exchange)

    def submit(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        request: Request,
        callback: Callable[[Outcome], None],
    ) -> Callable[[], None]:
        """``send`` with a callback: ``callback`` gets the response or the UpstreamError.
        Returns the function that abandons the attempt (then no callback). The common case —
        body in memory, an idle connection ready — runs with no task at all: written now,
        answered from the connection's ``data_received``."""
        connection = None
        if isinstance(request.body, bytes) and not cluster.upstream_http2(request.http2):
            connection = self._take_idle(endpoint, cluster)
        if connection is None:
            return run_then(_outcome(self.send(endpoint, cluster, request)), callback, _unexpected)
        return self._send_on(connection, endpoint, cluster, request, callback)

    def _send_on(
        self,
        connection: UpstreamConnection,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        request: Request,
        callback: Callable[[Outcome], None],
    ) -> Callable[[], None]:
        """A request with its body in memory on an idle connection, answered through
        ``callback`` (an idle connection found closed by the upstream sends it once more on a
        fresh one); returns the function that abandons it. Both ``send`` and ``submit`` come
        here for an idle connection."""
        assert isinstance(request.body, bytes)
        assert connection.transport is not None
        head_request = request.method == "HEAD"
        payload = _payload(request, request.body)
        attempt = _Attempt(
            self, endpoint, cluster, connection, callback, payload, head_request, request.interim
        )
        connection.begin(head_request, attempt, request.interim)
        self._write_soon(connection.transport, payload)
        return attempt.abandon

    def _write_soon(self, transport: asyncio.Transport, payload: bytes) -> None:
        """Write ``payload`` once this turn of the event loop has handled all it has: the
        upstream then wakes once for a batch of requests instead of once per request (on a
        shared core each wake-up preempts the proxy, and those switches cost more than the
        requests). The wait is the rest of the turn: microseconds."""
        if not self._unwritten:
            loop = self._loop
            if loop is None or not loop.is_running():  # first use, or a loop of a test before
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.write_queued)
        self._unwritten.append((transport, payload))

    def write_queued(self) -> None:
        """Write what ``_send_on`` queued (the event loop calls this at the end of its turn)."""
        unwritten, self._unwritten = self._unwritten, []
        for transport, payload in unwritten:
            if not transport.is_closing():  # closed meanwhile: its attempt has already failed
                transport.write(payload)

    async def _send_streamed(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        request: Request,
        headers: list[tuple[str, str]],
    ) -> Response:
        """A request whose body is still arriving: its head now, the body as it comes (with the
        client's Content-Length, or chunked). It cannot be sent twice, so a stale idle
        connection is not retried: a fresh one is used."""
        body = request.body
        assert isinstance(body, ByteStream)
        length = next((v for k, v in request.headers if k == "content-length"), None)
        headers.append(("content-length", length) if length else ("transfer-encoding", "chunked"))
        connection = self._take_idle(endpoint, cluster)
        if connection is not None:
            connection.close()  # an idle connection may be stale; this body cannot be replayed
        connection = await self._open(endpoint, cluster)
        waiter = connection.begin(request.method == "HEAD", None, request.interim)
        assert connection.transport is not None
        connection.transport.write(request_head(request.method, request.path, headers))
        try:
            async for chunk in body:
                if connection.closed:
                    break
                framed = chunk if length else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                connection.transport.write(framed)
                if connection.writable is not None:  # the upstream is not reading: wait
                    await connection.writable.wait()
            if not length and not connection.closed:
                connection.transport.write(b"0\r\n\r\n")
            exchange = await cast(asyncio.Future[Exchange], waiter)
        except StaleConnectionError:
            raise UpstreamError("reset", "connection closed before a response") from None
        except BaseException:
            # The body failed on the way (the client's bytes were refused, or it went away),
            # or the request was cancelled: the upstream holds half a request, so the
            # connection can carry nothing more.
            connection.close()
            raise
        return self._finish(endpoint, cluster, connection, exchange)

    async def upgrade(
        self, endpoint: EndpointSpec, cluster: ClusterSpec, request: Request
    ) -> Switched | Response:
        """An Upgrade request (its body empty) on a fresh connection: Switched when the
        upstream answers 101, its answer otherwise (the connection then serves as any other).
        Raises UpstreamError when it cannot be sent or answered."""
        connection = await self._open(endpoint, cluster)
        connection.upgrading = True
        payload = request_head(request.method, request.path, _headers(request))
        try:
            exchange = await connection.exchange(payload, request.method == "HEAD")
        except StaleConnectionError:
            raise UpstreamError("reset", "connection closed before a response") from None
        connection.upgrading = False
        head, rest, _ = exchange
        if head.status != 101:
            return self._finish(endpoint, cluster, connection, exchange)
        assert isinstance(rest, bytes)
        assert connection.transport is not None
        self.every.discard(connection)  # the tunnel's now, no longer the pool's
        connection.lost = None
        connection.reader.detach()
        return Switched(head, rest, connection.transport)

    def _finish(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        connection: UpstreamConnection,
        exchange: Exchange,
    ) -> Response:
        head, body, reusable = exchange
        connection.used += 1
        headers = end_to_end(head.headers) if head.hop_by_hop else head.headers
        if isinstance(body, ByteStream):
            # Back to the pool when the body has been read to its end; closed if abandoned.
            def release(conn: UpstreamConnection, keep: bool) -> None:
                self._give_back(endpoint, cluster, conn, keep)

            async def abandon() -> None:
                connection.close()

            connection.released = release
            return Response(
                head.status, headers, body, discard=abandon,
                upstream_principal=connection.peer_principal,
            )  # fmt: skip
        self._give_back(endpoint, cluster, connection, reusable)
        return Response(head.status, headers, body, upstream_principal=connection.peer_principal)

    def _give_back(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        connection: UpstreamConnection,
        reusable: bool,
    ) -> None:
        limit = cluster.max_requests_per_connection
        if reusable and not connection.closed and (limit is None or connection.used < limit):
            idle = self.idle.setdefault(endpoint.pool_key, [])
            if len(idle) < MAX_IDLE_PER_ENDPOINT:
                connection.idle_since = time.monotonic()
                idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close every connection, idle or in use."""
        self.h2.close()
        for connection in list(self.every):
            connection.close()
        self.idle.clear()
