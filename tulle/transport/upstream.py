"""One keep-alive HTTP/1.1 connection to an upstream endpoint (an asyncio Protocol feeding a
sans-IO response reader that calls it back), and what it hands over: a whole response, a
streamed one, or, for an Upgrade, the switched connection itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol, cast

from tulle.codec.http1 import ProtocolError, ResponseHead, ResponseReader, Upgraded
from tulle.engine.message import ByteStream, Interim, UpstreamError
from tulle.transport.mtls import peer_principal

STREAM_THRESHOLD: Final = 256 * 1024  # bodies larger than this, or of unknown length, are streamed

Exchange = tuple[ResponseHead, bytes | ByteStream, bool]


class Waiter(Protocol):
    """Where a connection delivers its next response: an asyncio Future, or a callback."""

    def done(self) -> bool: ...
    def set_result(self, result: Exchange, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class Switched:
    """An upstream switched protocols (101): its response head, the bytes that came after it,
    and the connection's transport, now a tunnel's to use."""

    def __init__(self, head: ResponseHead, rest: bytes, transport: asyncio.Transport) -> None:
        self.head, self.rest, self.transport = head, rest, transport


class _StaleConnectionError(Exception):
    """A reused connection was closed by the upstream before it answered: try a fresh one."""


class StaleConnectionError(Exception):
    """A reused connection was closed by the upstream before it answered: try a fresh one."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an endpoint, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader(self)
        self.waiter: Waiter | None = None
        self.head: ResponseHead | None = None
        self.chunks: list[bytes] = []
        self.received = False
        self.closed = False
        self.used = 0
        self.idle_since = time.monotonic()
        self.stream: ByteStream | None = None
        self.released: Callable[[UpstreamConnection, bool], None] | None = None
        self._needs_new_parser = False  # the last response answered a HEAD
        self.interim: Interim | None = None  # where the current request's 1xx answers go
        self.lost: Callable[[UpstreamConnection], None] | None = None  # told when it closes
        self.upgrading = False  # the request asks to switch protocols: a 101 is its answer
        self.writable: asyncio.Event | None = None  # set while the upstream reads what is sent
        self.peer_principal: str | None = None  # the SPIFFE id the upstream proved over mTLS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer_principal = peer_principal(transport)

    def pause_writing(self) -> None:
        """The upstream is not reading: a streamed request body waits (and so pauses its
        client)."""
        self.writable = asyncio.Event()

    def resume_writing(self) -> None:
        """The upstream reads again."""
        if self.writable is not None:
            self.writable.set()
            self.writable = None

    def data_received(self, data: bytes) -> None:
        self.received = True
        error = self.reader.feed(data)  # calls head_received, body_received, message_complete
        if error is not None:
            head, waiter = self.head, self.waiter
            if isinstance(error, Upgraded) and self.upgrading and head is not None:
                self.waiter = None  # switched: the bytes after the 101 belong to the tunnel
                if waiter is not None and not waiter.done():
                    waiter.set_result((head, error.data, False))
                return
            reason = (
                error.reason
                if isinstance(error, ProtocolError)
                else "upstream switched protocols (101) to a request that asked for no upgrade"
            )
            self._fail(UpstreamError("reset", reason))
            self.close()

    # --- the reader's calls (ResponseSink) --------------------------------------------------

    def head_received(self, head: ResponseHead) -> None:
        """A response's head: informational ones are passed on (the final one follows); a
        body to stream is handed over now, one to buffer at its end."""
        if head.status < 200:
            if head.status == 101:
                if self.upgrading:
                    self.head = head  # delivered once the parser stops at the switch
            elif self.interim is not None:
                self.interim(head.status, head.reason, head.headers)
            return
        self.head = head
        waiter = self.waiter
        # Stream bodies of unknown length or larger than STREAM_THRESHOLD; buffer the rest.
        if (
            waiter is not None
            and (head.length is None or head.length > STREAM_THRESHOLD)
            and not self.reader.head_request
            and head.status not in (204, 304)
        ):
            transport = self.transport
            assert transport is not None
            self.stream = ByteStream(transport.pause_reading, transport.resume_reading)
            self.waiter = None  # before the callback, which may hand out the next request
            waiter.set_result((head, self.stream, head.keep_alive))

    def body_received(self, data: bytes) -> None:
        """A piece of the response's body."""
        if self.stream is not None:
            self.stream.push(data)
        else:
            self.chunks.append(data)

    def message_complete(self) -> None:
        """The response ended."""
        head = self.head
        if head is None or head.status == 101:  # an informational response's end
            return
        # The waiter is cleared before any callback: a callback may give this connection back
        # to the pool and a pipelined request take it at once, with a waiter of its own.
        waiter, self.waiter = self.waiter, None
        if self.stream is not None:
            self.stream.finish()
            self.stream = None
            if self.released is not None:
                self.released(self, head.keep_alive)
        elif waiter is not None and not waiter.done():
            chunks = self.chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            waiter.set_result((head, body, head.keep_alive))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.resume_writing()  # nothing waits to write on a closed connection
        self.reader.detach()  # no reference cycle left for the collector
        if self.lost is not None:
            self.lost(self)
            self.lost = None
        if self.stream is not None:
            framed = self.head is not None and self.head.framed
            cut = UpstreamError("reset", "connection closed mid-body")
            self.stream.finish(cut if framed else None)
            self.stream = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if not self.received:
            waiter.set_exception(StaleConnectionError())
        elif self.head is not None and not self.head.framed:
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

    def begin(
        self, head_request: bool, waiter: Waiter | None = None, interim: Interim | None = None
    ) -> Waiter:
        """Get ready for the next response, delivered to ``waiter`` (by default a new
        future); informational responses before it go to ``interim``."""
        self.interim = interim
        if head_request or self.reader.failed or (self.used and self._needs_new_parser):
            self.reader = ResponseReader(self, head_request)
        self._needs_new_parser = head_request
        self.head, self.chunks, self.received = None, [], False
        self.waiter = waiter or asyncio.get_running_loop().create_future()
        return self.waiter

    async def exchange(
        self, payload: bytes, head_request: bool, interim: Interim | None = None
    ) -> Exchange:
        """Send one request and wait for the whole response."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise StaleConnectionError
        waiter = self.begin(head_request, None, interim)
        self.transport.write(payload)
        try:
            return await cast(asyncio.Future[Exchange], waiter)
        except asyncio.CancelledError:
            self.close()
            raise
