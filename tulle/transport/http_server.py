"""A small asyncio HTTP/1.1 server for APIs (control-plane API, admin endpoints), parsed by
httptools. Keep-alive, bodies up to a limit, and a 400 for anything malformed — never a crash.
Heads, bodies, read-ahead and write buffers are bounded, and clients that send nothing, or a
request a byte at a time, are disconnected: no client holds memory or a connection for ever.
Handlers are plain coroutines from :class:`Request` to :class:`Response`; a response with a
``stream`` is sent chunked as its iterator yields (a live feed: ``tulle tap``), paced by the
client's reading, and ends its connection."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
REQUEST_TIMEOUT = 60.0
"""A connection with no complete request for this long (idle between requests, or a request
trickling in) is closed: slow clients cannot hold connections for ever."""
MAX_PIPELINED = 8
"""Requests read ahead of their answers; past that, reading pauses until the answers are sent."""
LINGER_SECONDS = 2.0
"""After refusing a request whose body is still arriving, how long to read (and drop) the rest
before closing, so that the client reads the refusal rather than a reset (nginx's lingering
close)."""

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    """A parsed request: method, decoded path, query parameters, lowercased headers, body."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body as JSON; raises ValueError with a message for a client."""
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"request body is not JSON: {error}") from None


@dataclass
class Response:
    """A response; ``json_response`` and ``text_response`` build the common ones."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # A live body: each chunk is written as it comes (an empty one writes nothing: a chance to
    # notice a client gone); its ``aclose``, when it has one, is awaited when the client goes or
    # the stream ends.
    stream: AsyncIterator[bytes] | None = None


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response."""
    body = json.dumps(data, indent=2, sort_keys=False).encode() + b"\n"
    return Response(status, body, {"content-type": "application/json"})


def text_response(text: str, status: int = 200) -> Response:
    """A plain text response."""
    return Response(status, text.encode(), {"content-type": "text/plain; charset=utf-8"})


def error_response(status: int, message: str, **extra: Any) -> Response:
    """``{"error": message, ...}`` with ``status``."""
    return json_response({"error": message, **extra}, status)


Handler = Callable[[Request], Awaitable[Response]]


class _Connection(asyncio.Protocol):
    def __init__(
        self, handler: Handler, max_body: int = MAX_BODY, timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self.handler = handler
        self.max_body = max_body
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None
        self.failed = False
        self.in_head = False
        self.head_bytes = 0
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body = bytearray()
        # A Response queued is a refusal: written in turn, then the connection ends.
        # Each request with whether its connection stays open after it (pipelined requests
        # each say so for themselves).
        self.queue: asyncio.Queue[tuple[Request, bool] | Response | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        self.worker = asyncio.get_running_loop().create_task(self._serve())
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.writable.set()
        self.queue.put_nowait(None)

    def pause_writing(self) -> None:
        self.writable.clear()  # the client reads slower than we answer: answer no more for now

    def resume_writing(self) -> None:
        self.writable.set()

    def _arm(self) -> None:
        """(Re)start the clock for the next complete request."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        if self.transport is not None and not self.failed:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.failed:
            return  # lingering after a refusal: drop the rest of what the client sends
        in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrade is not supported here")
        except httptools.HttpParserError as error:
            if not self.failed:  # a callback's refusal stops the parser with an error too
                self._fail(400, f"malformed HTTP request: {error}")
        # httptools keeps a header being received to itself: bound the head by what came in
        if in_head and self.in_head and not self.failed:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEADER_BYTES:
                self._fail(400, "request head is too large")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.header_bytes, self.body = b"", {}, 0, bytearray()
        self.in_head, self.head_bytes = True, 0

    def on_url(self, url: bytes) -> None:
        if self.failed:
            return
        self.url += url
        if len(self.url) > MAX_HEADER_BYTES:
            self._fail(400, "request URL is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.failed:
            return
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._fail(400, "request headers are too large")
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.failed:
            return
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:  # refused before the body comes
            self._fail(413, f"request body is larger than {self.max_body} bytes")

    def on_body(self, body: bytes) -> None:
        if self.failed:
            return
        self.body += body
        if len(self.body) > self.max_body:
            self._fail(413, f"request body is larger than {self.max_body} bytes")

    def on_message_complete(self) -> None:
        if self.failed:
            return
        parts = urlsplit(self.url.decode("latin-1"))
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        request = Request(
            method, unquote(parts.path), parse_qs(parts.query), self.headers, bytes(self.body)
        )
        if self.timer is not None:
            self.timer.cancel()
        self.queue.put_nowait((request, keep_alive))
        if self.queue.qsize() >= MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()

    # serving
    async def _serve(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None or self.transport is None or self.transport.is_closing():
                return
            if self.queue.qsize() == MAX_PIPELINED - 1 and not self.failed:
                self.transport.resume_reading()
            if isinstance(item, Response):
                self._refuse(item)
                return
            request, keep_alive = item
            await self.writable.wait()
            try:
                response = await self.handler(request)
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                response = error_response(500, "internal error; see the control plane's log")
            if response.stream is not None:
                await self._write_stream(response, response.stream)
                return
            self._write(response, close=not keep_alive)
            if self.queue.empty():
                self._arm()

    def _write(self, response: Response, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = _REASONS.get(response.status, "Unknown")
        headers = {"content-length": str(len(response.body)), **response.headers}
        if close:
            headers["connection"] = "close"
        head = f"HTTP/1.1 {response.status} {reason}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.transport.write(head.encode("latin-1") + b"\r\n" + response.body)
        if close:
            self.transport.close()

    async def _write_stream(self, response: Response, stream: AsyncIterator[bytes]) -> None:
        """Send ``stream`` chunked, each chunk once the client has read enough of the last
        ones; end the connection after it, or stop it when the client goes."""
        transport = self.transport
        try:
            if transport is None or transport.is_closing():
                return
            reason = _REASONS.get(response.status, "Unknown")
            headers = {**response.headers, "transfer-encoding": "chunked", "connection": "close"}
            head = f"HTTP/1.1 {response.status} {reason}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            transport.write(head.encode("latin-1") + b"\r\n")
            async for chunk in stream:
                if transport.is_closing():
                    return
                if chunk:
                    transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await self.writable.wait()
            if not transport.is_closing():
                transport.write(b"0\r\n\r\n")
        finally:
            closing = getattr(stream, "aclose", None)
            if closing is not None:
                await closing()
            if transport is not None:
                transport.close()

    def _fail(self, status: int, message: str) -> None:
        """Refuse the request being received: answer in turn, then end the connection."""
        self.failed = True
        self.queue.put_nowait(error_response(status, message))
        if self.transport is not None:
            self.transport.resume_reading()  # to drop what still comes (see _refuse)

    def _refuse(self, response: Response) -> None:
        """Write a refusal and end the connection, reading (and dropping) what the client still
        sends for a while: closing with unread data would reset the connection, and the client
        would see the reset instead of the refusal."""
        transport = self.transport
        if transport is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        response.headers["connection"] = "close"
        self._write(response, close=not transport.can_write_eof())
        if not transport.is_closing():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    max_body: int = MAX_BODY,
    timeout: float = REQUEST_TIMEOUT,
    tls: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Start serving ``handler`` on ``host:port`` (0: any free port); a request body larger than
    ``max_body`` bytes is refused with 413 before it is read; a connection with no complete
    request for ``timeout`` seconds is closed. With ``tls``, HTTPS (the admission webhooks)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(handler, max_body, timeout), host, port, ssl=tls
    )


def listening_port(server: asyncio.Server) -> int:
    """The port ``server`` listens on (its first socket's)."""
    # uvloop gives a list where typeshed says tuple: read untyped, so compiled code (mypyc
    # checks declared types at run time) takes either.
    sockets = getattr(server, "sockets")  # noqa: B009
    port: int = sockets[0].getsockname()[1]
    return port
