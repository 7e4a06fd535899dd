"""Requests and responses as the engine sees them, whatever the front end (proxy or library)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from tulle.engine.errors import ERROR_HEADER, MeshError
from tulle.obs.finished import Finished
from tulle.obs.metrics import SOURCE_WORKLOAD_HEADER
from tulle.obs.tracing import Span


class ByteStream:
    """A body read as it arrives (async iterator of chunks), with back-pressure: ``pause`` is
    called when the reader falls ``high`` chunks behind, ``resume`` when it catches up."""

    def __init__(
        self,
        pause: Callable[[], None] | None = None,
        resume: Callable[[], None] | None = None,
        high: int = 16,
        low: int = 4,
        replay_limit: int = 0,
    ) -> None:
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self.pause, self.resume = pause, resume
        self.high, self.low = high, low
        self.paused = False
        self.received = 0
        self.complete = False
        # Up to replay_limit bytes are kept, so a finished body can be sent again (a retry).
        self.replay_limit = replay_limit
        self.kept: list[bytes] | None = [] if replay_limit else None

    def push(self, data: bytes) -> None:
        """A chunk arrived."""
        self.received += len(data)
        if self.kept is not None:
            if self.received <= self.replay_limit:
                self.kept.append(data)
            else:
                self.kept = None
        self.queue.put_nowait(data)
        if self.queue.qsize() > self.high and not self.paused and self.pause is not None:
            self.paused = True
            self.pause()

    def finish(self, error: BaseException | None = None) -> None:
        """The body ended (with ``error`` if it was cut)."""
        self.complete = error is None
        self.queue.put_nowait(error)

    def replay(self) -> bytes | None:
        """The whole body again, when it has ended and was small enough to keep."""
        if not self.complete or self.kept is None:
            return None
        return b"".join(self.kept)

    def __aiter__(self) -> ByteStream:
        return self

    async def __anext__(self) -> bytes:
        item = await self.queue.get()
        if self.paused and self.queue.qsize() < self.low and self.resume is not None:
            self.paused = False
            self.resume()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item


Body = bytes | AsyncIterator[bytes]
Interim = Callable[[int, str, list[tuple[str, str]]], None]  # status, reason, headers

# gRPC status codes for the mesh's own answers to gRPC calls.
_GRPC_FOR_HTTP: Final = {400: 13, 403: 7, 404: 12, 429: 8, 503: 14, 504: 4}


class Request:
    """A request: header names lowercase; ``path`` includes the query string; ``body`` is
    buffered (so it can be retried). ``interim``: where an upstream's informational answers
    (103 Early Hints, 102...) go: the front end that can write them to the client before the
    final response (None: dropped). ``peer_principal``: the caller's SPIFFE id
    (``spiffe://cluster.local/ns/default/sa/frontend``) that the front took from the mTLS
    handshake on the connection the request came in on; None over plain text. ``local_ip``
    (the address the connection came to) and ``sni`` (the server name of its TLS handshake)
    are set by a front that serves inbound requests, for authorization; "" when unknown."""

    # A plain class, not a dataclass: compiled, a dataclass's __init__ stays interpreted, at
    # several times the cost (one or two of these are made per request).
    __slots__ = (
        "authority", "body", "headers", "http2", "interim", "local_ip", "method", "path",
        "peer_principal", "sni", "source_ip", "span",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        path: str,
        authority: str,
        headers: list[tuple[str, str]],
        body: bytes | ByteStream = b"",
        source_ip: str = "",
        http2: bool = False,
        interim: Interim | None = None,
        peer_principal: str | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.authority = authority
        self.headers = headers
        self.body = body
        self.source_ip = source_ip
        self.http2 = http2
        self.interim = interim
        self.peer_principal = peer_principal
        self.span: Span | None = None  # the tracer's decision (tulle.obs.tracing)
        self.local_ip = ""
        self.sni = ""

    def __repr__(self) -> str:
        return f"Request({self.method} {self.authority}{self.path})"

    @property
    def body_size(self) -> int:
        """Bytes of body received so far."""
        return len(self.body) if isinstance(self.body, bytes) else self.body.received

    @property
    def replayable(self) -> bool:
        """Whether the body is in memory, so the request can be sent again (retries, mirrors)."""
        return isinstance(self.body, bytes)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lowercase)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def is_grpc(self) -> bool:
        """Whether this is a gRPC call."""
        content_type = self.header("content-type") or ""
        return content_type.startswith("application/grpc")


class Response:
    """A response: from upstream (``upstream`` set) or produced by the mesh (``flag`` and
    ``reason`` set). ``discard`` releases an upstream response that will not be used.
    ``upstream_principal``: the SPIFFE id the upstream proved in the mTLS handshake of the
    connection the response came on (set by the pool, once per connection); None over plain
    text."""

    __slots__ = (
        "attempts", "body", "cluster", "discard", "flag", "headers", "reason", "route", "status",
        "trailers", "upstream", "upstream_principal", "upstream_workload",
    )  # fmt: skip

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: Body = b"",
        flag: str = "-",
        reason: str = "",
        upstream: str = "",
        upstream_workload: str = "",
        cluster: str = "",
        route: str = "",
        attempts: int = 0,
        trailers: list[tuple[str, str]] | None = None,
        discard: Callable[[], Awaitable[None]] | None = None,
        upstream_principal: str | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.flag = flag
        self.reason = reason
        self.upstream = upstream
        self.upstream_workload = upstream_workload
        self.cluster = cluster
        self.route = route
        self.attempts = attempts
        self.trailers = [] if trailers is None else trailers
        self.discard = discard
        self.upstream_principal = upstream_principal

    def __repr__(self) -> str:
        return f"Response({self.status} {self.flag} {self.reason!r})"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lowercase)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def release(self) -> None:
        """Give the upstream connection back without reading the body."""
        if self.discard is not None:
            await self.discard()


def finished(
    listener: str,
    request: Request,
    response: Response,
    started: float,
    ended: float,
    sent: int,
    service: str | None = None,
) -> Finished:
    """What the access log and the metrics record of ``request`` answered with ``response``:
    ``started`` and ``ended`` are wall-clock seconds, ``sent`` the body bytes written to the
    client. With ``service``, the workload served the request as that service: its caller is
    who its certificate says (``request.peer_principal``) over mTLS, and only over plain text
    the workload the source-workload header names (an unproven claim, which the metrics label
    ``connection_security_policy="none"``); without, it sent the request, and the peer is the
    upstream its response came from. Both modes (sidecar fronts, library inbound) come here,
    so the rule is the same in both."""
    done = Finished(
        listener, request.method, request.authority, request.path, request.source_ip,
        request.header("x-request-id") or "", request.body_size, response.status, response.flag,
        response.reason, response.route, response.cluster, response.upstream,
        response.upstream_workload, response.attempts, sent, started, ended,
    )  # fmt: skip
    if service is not None:
        done.reporter, done.service = "destination", service
        principal = request.peer_principal
        if principal is None:
            done.caller = request.header(SOURCE_WORKLOAD_HEADER) or ""
        else:
            done.peer_principal = principal
    else:
        principal = response.upstream_principal
        if principal is not None:
            done.peer_principal = principal
    span = request.span
    if span is not None and span.sampled:
        done.span = span
        if request.is_grpc:
            span.grpc_status = grpc_status(response)
    return done


def grpc_status(response: Response) -> int:
    """The gRPC status of ``response`` (trailers-only in its headers, else in its trailers);
    -1 when it has none."""
    text = response.header("grpc-status")
    if text is None:
        text = next((v for k, v in response.trailers if k == "grpc-status"), None)
    if text is None or not text.isdigit():
        return -1
    return int(text)


def mesh_response(
    error: MeshError,
    grpc: bool = False,
    cluster: str = "",
    route: str = "",
    grpc_code: int | None = None,
) -> Response:
    """The response the mesh sends for ``error``: the reason in ``x-tulle-error`` and the body,
    or, for a gRPC call, as a trailers-only gRPC status (``grpc_code``, or the one matching the
    HTTP status)."""
    if grpc:
        code = grpc_code if grpc_code is not None else _GRPC_FOR_HTTP.get(error.status, 2)
        headers = [
            ("content-type", "application/grpc"),
            ("grpc-status", str(code)),
            ("grpc-message", error.reason),
            (ERROR_HEADER, error.reason),
        ]
        return Response(200, headers, b"", error.flag, error.reason, cluster=cluster, route=route)
    body = (error.reason + "\n").encode()
    headers = [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
        (ERROR_HEADER, error.reason),
    ]
    return Response(
        error.status, headers, body, error.flag, error.reason, cluster=cluster, route=route
    )


class UpstreamError(Exception):
    """No response from an endpoint: ``kind`` is ``connect``, ``reset``, ``refused-stream``,
    ``timeout``, ``overflow`` (the sender's connection limit left no way to send it), or
    ``client`` (the request's own body failed on the way: malformed, or the client went away);
    the message says what happened."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
