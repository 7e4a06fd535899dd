"""The HTTP/1.1 front end: accepts the app's connections, parses requests (keep-alive,
pipelining, Expect: 100-continue), runs each through the engine in order, and writes responses.
A malformed request gets a 400 with the reason and the connection is closed; it is never
forwarded. Requests are dispatched from ``data_received`` and answered through a callback, so
the common case needs no task; only streamed responses and tunnels get one.

An ``Upgrade`` request goes upstream alone: only the upstream's ``101`` turns the connection
into a tunnel; any other answer is passed on and the bytes after the request are parsed as
the next requests (never piped unrouted). A client that does not read its responses stops
being read (no more requests are begun, streamed bodies pause their upstream). A head that
takes longer than the header timeout gets a 408; an idle connection is closed after the idle
timeout (see :mod:`tulle.proxy.limits`)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, cast

from tulle.codec.http1 import (
    ProtocolError,
    RefusedError,
    RequestHead,
    RequestReader,
    Upgraded,
    response_head,
)
from tulle.engine import errors
from tulle.engine.message import ByteStream, Request, Response, UpstreamError, mesh_response
from tulle.engine.tasks import Cancel, nothing_to_cancel
from tulle.proxy.in_flight import InFlight
from tulle.proxy.limits import FrontLimits
from tulle.proxy.recording import Destination, Recorder
from tulle.proxy.requests import http1_request
from tulle.proxy.tcp import TcpPipe
from tulle.transport.interception import original_destination
from tulle.transport.mtls import connection_facts, peer_principal

log: Final = logging.getLogger(__name__)
# The module's own name for it: compiled code reads a Final from a static, not from the
# module's globals dict (every request uses it).
_NOTHING_TO_CANCEL: Final = nothing_to_cancel

MAX_BODY: Final = 16 * 1024 * 1024
BUFFER_LIMIT: Final = 1024 * 1024  # larger request bodies (or chunked ones) stream, without retries
DRAIN_IDLE: Final = 1.0  # seconds a draining connection may stay idle before it is closed
LINGER: Final = 2.0  # seconds a refused client's further bytes are read and dropped (see _refuse)


_DEFAULT_LIMITS: Final = FrontLimits()


Done = Callable[[Response], None]
# Runs a request and calls the callback with the response (perhaps before it returns); returns
# the function that cancels it (the client went away; then no callback).
Dispatcher = Callable[[Request, Destination, Done], Cancel]
Item = tuple[RequestHead, bytes | ByteStream] | ProtocolError
# Opens an upgraded tunnel: returns the pipe (connected, the request head sent) or an answer.
Tunneler = Callable[[Request, Destination, asyncio.Transport], Awaitable["TcpPipe | Response"]]


class _Answer:
    """The callback a dispatched request is answered through: ``functools.partial`` of
    :meth:`Http1Front._answer`, as a compiled class (one object per request instead of a
    partial, its argument tuple and a bound method, and a direct call)."""

    __slots__ = ("front", "head", "request", "started")

    def __init__(
        self, front: Http1Front, head: RequestHead, request: Request, started: float
    ) -> None:
        self.front, self.head, self.request, self.started = front, head, request, started

    def __call__(self, response: Response) -> None:
        self.front._answer(self.head, self.request, self.started, response)


class Http1Front(asyncio.Protocol):
    """One downstream connection."""

    def __init__(
        self,
        listener: str,
        dispatch: Dispatcher,
        recorder: Recorder,
        in_flight: InFlight,
        transparent: bool = False,
        tunnel: Tunneler | None = None,
        limits: FrontLimits | None = None,
    ) -> None:
        self.listener = listener
        self.limits = limits or _DEFAULT_LIMITS
        self.idle_since = self.limits.now  # when the connection last had nothing in progress
        self.head_since = 0.0  # when the head being read began (0: none is being read)
        self.write_paused = False  # the client is not reading: nothing more is begun
        self.writable: asyncio.Event | None = None  # set when the client reads again
        self.transparent = transparent
        self.tunnel = tunnel
        self.pipe: TcpPipe | None = None
        self.early: list[bytes] = []
        self.streaming: ByteStream | None = None
        self.original_dst: Destination = None
        self.dispatch = dispatch
        self.recorder = recorder
        self.in_flight = in_flight
        self.reader = RequestReader(self)
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[Item] = collections.deque()
        self.busy = False  # a request is being answered (responses go out in order)
        self.closed = False
        self._advancing = False
        self.head: RequestHead | None = None
        self.chunks: list[bytes] = []  # the body of the request being read
        self.body_size = 0
        self.last_write = 0.0  # when a streamed answer's latest bytes were written: its end
        self.peer = ""
        self.peer_principal: str | None = None  # the SPIFFE id the peer proved over mTLS
        self.local_ip = ""  # the address the connection came to
        self.sni = ""  # the server name its TLS client sent
        self.draining = False  # the last response says Connection: close
        # The request dispatched and not yet answered: itself, its start, how to cancel it.
        self.unanswered: tuple[Request, float, Cancel] | None = None
        self.answers = 0  # responses begun, to tell a request answered during its dispatch

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        self.in_flight.opened(self)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.peer_principal = peer_principal(transport)
        if self.transparent:
            self.original_dst = original_destination(transport.get_extra_info("socket"))
        self.local_ip, self.sni = connection_facts(transport, self.original_dst)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reader.detach()
        self.in_flight.closed(self)
        self.waiting.clear()
        if self.unanswered is not None:
            # The client went away before its answer: the request is cancelled upstream too.
            request, started, cancel = self.unanswered
            self.unanswered = None
            cancel()
            reason = "client closed the connection"
            self.recorder.client_gone(self.listener, request, started, reason, self.original_dst)
            self.in_flight.end()
        if self.streaming is not None:
            self.streaming.finish(UpstreamError("client", "client closed mid-body"))
        if self.pipe is not None:
            self.pipe.close()
        if self.writable is not None:
            self.writable.set()

    def drain(self) -> None:
        """The proxy is draining: the requests already read are answered, the last answer
        with ``Connection: close``. An idle connection is closed if it stays idle for
        DRAIN_IDLE seconds: closing it at once would lose a request the client is sending
        just then (a client of a busy connection gets its ``Connection: close`` sooner). A
        tunnel runs on."""
        self.draining = True
        asyncio.get_running_loop().call_later(DRAIN_IDLE, self._close_if_idle)

    @property
    def idle(self) -> bool:
        """No request is being read, waiting or answered, and it is no tunnel."""
        return not (self.busy or self.waiting or self.head is not None or self.pipe is not None)

    def _close_if_idle(self) -> None:
        if self.idle and not self.closed:
            self._close()

    def expire(self, now: float) -> None:
        """Called every second or so: a head slower than the header timeout gets a 408 and the
        connection closes (slowloris); an idle connection closes after the idle timeout."""
        if self.closed:
            return
        limits = self.limits
        if self.head_since and now - self.head_since > limits.header_timeout and not self.busy:
            reason = f"request headers not received within {limits.header_timeout:g}s"
            self.head_since = 0.0
            self.reader.detach()
            self._enqueue(ProtocolError(408, reason))
        elif not self.head_since and self.idle and now - self.idle_since > limits.idle_timeout:
            self._close()

    def pause_writing(self) -> None:
        """The client is not reading: stop reading its requests, and let streamed bodies wait
        (their upstream is paused in turn)."""
        self.write_paused = True
        if self.pipe is not None:
            self.pipe.pause("down")
        elif self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The client reads again."""
        self.write_paused = False
        if self.writable is not None:
            self.writable.set()
            self.writable = None
        if self.pipe is not None:
            self.pipe.resume("down")
        elif self.transport is not None and not self.closed:
            self.transport.resume_reading()
        if self.waiting and not self.busy:
            self._advance()

    async def _until_writable(self) -> None:
        if self.writable is None:
            self.writable = asyncio.Event()
        await self.writable.wait()

    def eof_received(self) -> bool:
        if self.pipe is not None:
            self.pipe.half_close("down")
            return True
        return False

    def data_received(self, data: bytes) -> None:
        if self.pipe is not None:
            self.pipe.forward("down", data)
            return
        reader = self.reader
        if reader.failed:
            if not self.closed and self.head is not None and self.head.upgrade:
                self.early.append(data)  # bytes after an Upgrade, until the upstream answers
            return
        if self.head is None and not self.head_since:
            self.head_since = self.limits.now  # a head begins (or ends here, then reset)
        tail = reader.feed(data)  # calls head_received, body_received, message_complete
        if tail is None:
            return
        if isinstance(tail, Upgraded):
            if self.head is not None:
                self.early.append(tail.data)
                if self.transport is not None:
                    self.transport.pause_reading()
                self._enqueue((self.head, b""))
            return
        if self.streaming is not None:
            self.streaming.finish(UpstreamError("client", f"client sent {tail.reason}"))
            self.streaming = None
        self._enqueue(tail)

    # --- the reader's calls (RequestSink) ---------------------------------------------------

    def head_received(self, head: RequestHead) -> None:
        """A request's head: buffered until its end, or streamed when chunked or large."""
        self.head, self.chunks, self.body_size = head, [], 0
        self.head_since = 0.0
        if head.expect_continue and not (self.busy or self.waiting):
            # Only for the request being answered next: one queued behind a response still
            # being written gets no 100 inside that response (its client sends the body after
            # its own wait, as RFC 9110 allows).
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if (head.chunked or (head.length or 0) > BUFFER_LIMIT) and self.transport is not None:
            transport = self.transport
            self.streaming = ByteStream(transport.pause_reading, transport.resume_reading)
            self._enqueue((head, self.streaming))

    def body_received(self, data: bytes) -> None:
        """A piece of the request's body."""
        if self.streaming is not None:
            self.streaming.push(data)
            return
        self.chunks.append(data)
        self.body_size += len(data)
        if self.body_size > MAX_BODY:
            raise RefusedError(f"request body over {MAX_BODY} bytes", 413)

    def message_complete(self) -> None:
        """The request ended: a buffered one goes to the engine."""
        head = self.head
        if self.streaming is not None:
            self.streaming.finish()
            self.streaming, self.head = None, None
        elif head is not None and not head.upgrade:  # an upgrade goes on from feed's Upgraded
            self.head = None
            chunks = self.chunks
            self._enqueue((head, b"".join(chunks) if chunks else b""))

    def _interim(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        """An upstream's informational response (103 Early Hints, 102...) for the request
        being answered, passed on before its final response. 100 Continue is this front end's
        own to give (it answers ``Expect`` itself), so the upstream's is not repeated."""
        if status == 100 or self.closed:
            return
        self._write(response_head(status, headers, reason))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # --- requests in order ------------------------------------------------------------------

    def _enqueue(self, item: Item) -> None:
        if not (self.busy or self.waiting or self._advancing or self.closed or self.write_paused):
            self._advancing = True  # the common case: nothing ahead of it, begun at once
            try:
                self._begin(item)
            finally:
                self._advancing = False
            if self.waiting and not self.busy:  # answered at once, with more pipelined behind
                self._advance()
            return
        self.waiting.append(item)
        if not self.busy:
            self._advance()

    def _advance(self) -> None:
        """Start the next request while none is being answered (re-entered from an answer
        given at once, it leaves the loop below to go on)."""
        if self._advancing:
            return
        self._advancing = True
        try:
            while self.waiting and not self.busy and not self.closed and not self.write_paused:
                self._begin(self.waiting.popleft())
        finally:
            self._advancing = False

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _refuse(self, response: Response, method: str) -> None:
        """Answer a request the connection cannot go on after, then close gently (nginx's
        lingering close): the write side first, while what the client still sends is read
        and dropped for LINGER seconds; closed at once, the kernel would answer the client's
        unread bytes with a reset that can destroy the answer before it is read."""
        self._respond(response, method, close=True, shut=False)
        self.closed = True
        self.reader.detach()  # what comes now is dropped (data_received)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER, transport.close)

    def _begin(self, item: Item) -> None:
        if isinstance(item, ProtocolError):
            reason = f"bad request: {item.reason}"
            self._refuse(mesh_response(errors.MeshError(item.status, "DPE", reason)), "GET")
            return
        head, body = item
        started = time.time()
        request = http1_request(head, body, self.peer, self.limits.paths)
        if isinstance(request, Response):
            self._refuse(request, head.method)
            return
        request.peer_principal = self.peer_principal
        request.local_ip, request.sni = self.local_ip, self.sni
        self.busy = True
        if head.version == "1.1":  # HTTP/1.0 clients get no informational responses
            request.interim = self._interim
        if head.upgrade:
            if head.chunked or head.length:
                reason = "bad request: an Upgrade request with a body is not supported"
                self._refuse(mesh_response(errors.MeshError(400, "DPE", reason)), "GET")
                return
            task = asyncio.get_running_loop().create_task(self._open_tunnel(head, request, started))
            self.in_flight.track(task)
            return
        self.in_flight.begin()
        self.unanswered = (request, started, _NOTHING_TO_CANCEL)
        answers = self.answers
        answer = _Answer(self, head, request, started)
        try:
            cancel = self.dispatch(request, self.original_dst, answer)
        except Exception as failure:  # a bug: answered with its reason, the slot given back
            log.exception("request failed inside the proxy")
            if self.answers == answers:
                reason = f"internal error: {failure!r}"
                answer(mesh_response(errors.MeshError(500, "DPE", reason)))
            return
        # Not answered at once: cancelled if the client goes. (Counted, not read back from
        # ``unanswered``: compiled code would trust the type the assignment above gave it.)
        if self.answers == answers:
            self.unanswered = (request, started, cancel)

    def _answer(
        self, head: RequestHead, request: Request, started: float, response: Response
    ) -> None:
        self.unanswered = None
        self.answers += 1
        # The last answer of a draining connection closes it (pipelined requests read before
        # it are answered first).
        close = not head.keep_alive or (self.draining and not self.waiting and not self.head)
        if isinstance(response.body, bytes):
            ended = time.time()  # before the write: see Recorder.record
            sent = self._respond(response, head.method, close)
            self._answered(request, response, started, sent, close, ended)
            return
        streamed = self._stream_and_finish(head, request, response, started, close)
        self.in_flight.track(asyncio.get_running_loop().create_task(streamed))

    async def _stream_and_finish(
        self, head: RequestHead, request: Request, response: Response, started: float, close: bool
    ) -> None:
        # HTTP/1.0 has no chunked coding: a body of unknown length ends with the connection.
        chunked = head.version != "1.0"
        close = close or (not chunked and response.header("content-length") is None)
        sent = await self._stream(response, head.method, close, chunked)
        self._answered(request, response, started, sent, close, self.last_write)

    def _answered(
        self,
        request: Request,
        response: Response,
        started: float,
        sent: int,
        close: bool,
        ended: float = 0.0,
    ) -> None:
        self.recorder.record(
            self.listener, request, response, started, sent, self.original_dst, ended
        )
        self.in_flight.end()
        self.busy = False
        if close or self.closed:
            self.closed = True
            return
        if self.waiting:
            self._advance()
        else:
            self.idle_since = self.limits.now

    async def _open_tunnel(self, head: RequestHead, request: Request, started: float) -> None:
        """The Upgrade request goes upstream alone (the bytes after it wait in ``early``): a
        101 makes the connection a tunnel; any other answer (the upstream's or the mesh's)
        is given as a response, and the bytes after the request are parsed as requests."""
        if self.tunnel is None or self.transport is None:
            reason = "protocol upgrade is not supported on this listener"
            result: TcpPipe | Response = mesh_response(errors.MeshError(400, "DPE", reason))
        else:
            result = await self.tunnel(request, self.original_dst, self.transport)
        if self.closed:
            if isinstance(result, TcpPipe):
                result.close()
            return
        if isinstance(result, Response):
            self.in_flight.begin()  # ended by _answered, as for any request
            self._answer(head, request, started, result)
            self._parse_again()
            return
        self.pipe = result
        for data in self.early:
            result.forward("down", data)
        self.early.clear()
        if self.transport is not None:
            self.transport.resume_reading()
        tunnelled = Response(101, [], b"", route="upgrade", upstream="tunnel")
        self.recorder.record(self.listener, request, tunnelled, started, 0, self.original_dst)

    def _parse_again(self) -> None:
        """After an Upgrade the upstream refused: a new reader takes the bytes that followed
        the request, as requests."""
        if self.closed:
            return
        self.reader.detach()
        self.reader = RequestReader(self)
        self.head = None
        early = b"".join(self.early)
        self.early.clear()
        if self.transport is not None and not self.write_paused:
            self.transport.resume_reading()
        if early:
            self.data_received(early)

    def _respond(self, response: Response, method: str, close: bool, shut: bool = True) -> int:
        """Write a response whose body is in memory; with ``close`` it says so, and closes
        the connection unless told not to (``shut``)."""
        body = response.body if isinstance(response.body, bytes) else b""
        status = response.status
        # The body's own length; a HEAD's answer keeps the length the upstream gave.
        sized = status >= 200 and status not in (204, 304) and method != "HEAD"
        payload = response_head(status, response.headers, "", len(body) if sized else None, close)
        if method != "HEAD":
            payload += body
        self._write(payload)
        if close and shut and self.transport is not None:
            self.transport.close()
        return len(body)

    async def _stream(
        self, response: Response, method: str, close: bool, chunked: bool = True
    ) -> int:
        """Write a response whose body arrives in pieces: each piece goes out as it comes
        (chunked when the upstream gave no length and the client speaks HTTP/1.1; else the
        body ends when the connection does)."""
        assert not isinstance(response.body, bytes)
        length = response.header("content-length")
        headers = list(response.headers)
        chunked = chunked and length is None
        if chunked:
            headers.append(("transfer-encoding", "chunked"))
        self.last_write = time.time()  # each write's, so never an earlier answer's
        self._write(response_head(response.status, headers, close=close))
        sent = 0
        try:
            async for chunk in response.body:
                if method == "HEAD" or not chunk:
                    continue
                sent += len(chunk)
                self.last_write = time.time()
                self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self.write_paused and not self.closed:
                    await self._until_writable()  # the upstream pauses as its chunks queue
                if self.transport is None or self.transport.is_closing():
                    await response.release()
                    return sent
        except UpstreamError:
            close = True  # the body was cut: the client must see the connection end early
        else:
            if chunked and method != "HEAD":  # a HEAD's answer has no body, not even its end
                self.last_write = time.time()
                self._write(b"0\r\n\r\n")
        if close:
            self._close()  # and nothing after this response is begun (_answered)
        return sent
