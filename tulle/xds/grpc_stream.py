"""One gRPC bidirectional-streaming call over HTTP/2, h2 doing the framing: what the ADS client
of the sidecar and of the library needs. The sidecar does not load grpcio's core for it (about
15 MB of RSS and seven threads in every sidecar); the control plane's server stays grpcio.

Messages are gRPC's length-prefixed frames (uncompressed: the call offers only ``identity``); the
call ends with the server's ``grpc-status`` trailer, a reset or a lost connection, each raised
as a GrpcStreamError that says which."""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tulle.codec.http2 import GoawayFilter, H2Sender, text_headers

STREAM_ID = 1
_PREFIX = 5  # compressed flag, then the message length (4 bytes, big-endian)
_STATUS_NAMES = {
    "0": "OK", "1": "CANCELLED", "2": "UNKNOWN", "3": "INVALID_ARGUMENT",
    "4": "DEADLINE_EXCEEDED", "5": "NOT_FOUND", "6": "ALREADY_EXISTS", "7": "PERMISSION_DENIED",
    "8": "RESOURCE_EXHAUSTED", "9": "FAILED_PRECONDITION", "10": "ABORTED", "11": "OUT_OF_RANGE",
    "12": "UNIMPLEMENTED", "13": "INTERNAL", "14": "UNAVAILABLE", "15": "DATA_LOSS",
    "16": "UNAUTHENTICATED",
}  # fmt: skip


class GrpcStreamError(Exception):
    """The call ended: ``code`` is the gRPC status name (UNAVAILABLE when the connection, not the
    server, ended it) and ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as host and port; ValueError names what is wrong."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def frame(message: bytes) -> bytes:
    """A message as gRPC puts it on the wire: uncompressed, length-prefixed."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


class _CallProtocol(asyncio.Protocol):
    """The HTTP/2 connection carrying the one call: its messages go to ``received``."""

    def __init__(
        self,
        authority: str,
        path: str,
        scheme: str = "http",
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.sender = H2Sender(self.conn)
        self.headers = [
            (":method", "POST"),
            (":scheme", scheme),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-accept-encoding", "identity"),
            ("user-agent", "tulle-xds"),
            *metadata,
        ]
        self.transport: asyncio.Transport | None = None
        self.received: asyncio.Queue[bytes | GrpcStreamError] = asyncio.Queue()
        self.ended = False
        self.gone = asyncio.Event()  # the connection is closed (connection_lost)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._buffer = bytearray()
        self._status: dict[str, str] = {}
        self._goaways = GoawayFilter()  # h2 would refuse the frames after one

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.loop = asyncio.get_running_loop()
        _open.add(self)
        self.conn.initiate_connection()
        self.conn.send_headers(STREAM_ID, self.headers)
        self.flush()

    def flush(self) -> None:
        """Write what h2 has queued."""
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _end(self, error: GrpcStreamError) -> None:
        if not self.ended:
            self.ended = True
            self.received.put_nowait(error)
            if self.transport is not None:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        data, goaways = self._goaways.feed(data)
        try:
            events = self.conn.receive_data(data) if data else []
        except h2.exceptions.ProtocolError as error:
            self._end(GrpcStreamError("UNAVAILABLE", f"HTTP/2 protocol error: {error}"))
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                self._status.update(text_headers(event.headers))
                status = self._status.get(":status", "200")
                if status != "200":
                    self._end(GrpcStreamError("UNAVAILABLE", f"HTTP status {status}"))
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, STREAM_ID)
                self._buffer.extend(event.data)
                self._deframe()
            elif isinstance(event, h2.events.StreamEnded):
                self._end(self._ending())
            elif isinstance(event, h2.events.StreamReset):
                self._end(GrpcStreamError("UNAVAILABLE", f"stream reset (code {event.error_code})"))
            elif isinstance(event, h2.events.WindowUpdated):
                self.sender.pump(STREAM_ID)
        self.flush()
        for goaway in goaways:  # the call goes on unless the server never took it
            if goaway.last_stream_id < STREAM_ID:
                self._end(GrpcStreamError("UNAVAILABLE", "the server went away (GOAWAY)"))

    def _deframe(self) -> None:
        buffer = self._buffer
        while len(buffer) >= _PREFIX:
            length = int.from_bytes(buffer[1:_PREFIX], "big")
            if len(buffer) < _PREFIX + length:
                return
            if buffer[0]:
                self._end(GrpcStreamError("INTERNAL", "compressed message (none was offered)"))
                return
            self.received.put_nowait(bytes(buffer[_PREFIX : _PREFIX + length]))
            del buffer[: _PREFIX + length]

    def _ending(self) -> GrpcStreamError:
        code = self._status.get("grpc-status")
        message = urllib.parse.unquote(self._status.get("grpc-message", ""))
        if code is None:
            return GrpcStreamError("UNKNOWN", "the stream ended without a grpc-status")
        return GrpcStreamError(_STATUS_NAMES.get(code, code), message or "the server ended it")

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(GrpcStreamError("UNAVAILABLE", f"connection lost: {exc or 'closed'}"))
        self.gone.set()
        _open.discard(self)


# Every call's connection not yet lost, for close_connections().
_open: weakref.WeakSet[_CallProtocol] = weakref.WeakSet()


async def close_connections(timeout: float = 2.0) -> None:
    """Close the connections of this event loop's calls and wait until each is gone, so the
    loop can then be closed: closing a TLS connection waits for the server's close_notify, and
    an event loop (uvloop) with a connection still closing refuses to close. One still there
    after ``timeout`` seconds is aborted."""
    loop = asyncio.get_running_loop()
    mine = [p for p in list(_open) if p.loop is loop and p.transport is not None]
    for protocol in mine:
        protocol.ended = True
        cast(asyncio.Transport, protocol.transport).close()
    try:
        async with asyncio.timeout(timeout):
            for protocol in mine:
                await protocol.gone.wait()
    except TimeoutError:
        for protocol in mine:
            if not protocol.gone.is_set():
                cast(asyncio.Transport, protocol.transport).abort()
        async with asyncio.timeout(timeout):  # an aborted connection is lost at once
            for protocol in mine:
                await protocol.gone.wait()


class GrpcStream:
    """A bidirectional-streaming call: ``send`` messages, ``receive`` the server's."""

    def __init__(self, protocol: _CallProtocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(
        cls,
        address: str,
        path: str,
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> GrpcStream:
        """Call ``path`` (``/package.Service/Method``) on the server at ``address`` (over TLS
        with ``tls``: the server's certificate checked against the context's roots and its
        address), sending ``metadata`` (lower-case names) with the call; raises
        GrpcStreamError (UNAVAILABLE) when it cannot connect."""
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        scheme = "https" if tls is not None else "http"
        if tls is not None:
            tls.set_alpn_protocols(["h2"])  # gRPC servers refuse TLS without it
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_connection(
                    lambda: _CallProtocol(address, path, scheme, metadata),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            raise GrpcStreamError("UNAVAILABLE", f"connect timed out after {timeout:g}s") from None
        except ssl.SSLError as error:
            raise GrpcStreamError("UNAVAILABLE", f"TLS: {error.reason or error}") from None
        except OSError as error:
            raise GrpcStreamError("UNAVAILABLE", f"connect: {error.strerror or error}") from None
        return cls(protocol)

    def finish(self) -> None:
        """Half-close: no more messages from this side (a unary call's end of request)."""
        protocol = self._protocol
        if not protocol.ended:
            protocol.sender.close(STREAM_ID, None)
            protocol.flush()

    def send(self, message: bytes) -> None:
        """Send one message (queued behind flow control when the window is full)."""
        protocol = self._protocol
        if protocol.ended:
            return  # receive() raises why
        protocol.sender.append(STREAM_ID, frame(message))
        protocol.flush()

    async def receive(self) -> bytes:
        """The next message; raises GrpcStreamError once the call has ended."""
        item = await self._protocol.received.get()
        if isinstance(item, GrpcStreamError):
            self._protocol.received.put_nowait(item)  # every later call ends the same way
            raise item
        return item

    def close(self) -> None:
        """End the call and its connection."""
        protocol = self._protocol
        if protocol.transport is not None and not protocol.ended:
            protocol.ended = True
            protocol.transport.close()


async def unary_call(
    address: str,
    path: str,
    request: bytes,
    tls: ssl.SSLContext | None,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 10.0,
) -> bytes:
    """One unary call (a connection of its own): the server's one answer, or GrpcStreamError
    with the status and message the server ended the call with."""
    async with asyncio.timeout(timeout):
        call = await GrpcStream.open(address, path, timeout, tls, metadata)
        try:
            call.send(request)
            call.finish()
            return await call.receive()
        finally:
            call.close()


CA_SIGN_PATH = "/tulle.security.v1.CertificateService/Sign"


def ca_signer(
    address: str,
    tls: ssl.SSLContext | Callable[[], ssl.SSLContext],
    credential: Callable[[], str],
) -> Callable[[bytes], Awaitable[bytes]]:
    """The transport a workload's certificate keeper signs through: a unary call to the mesh
    CA on the control plane's secure xDS port, the credential read afresh for each call, the
    control plane verified with ``tls`` (or the context it returns at each call: the roots
    follow the trust bundle through a root rotation)."""

    async def sign(request: bytes) -> bytes:
        metadata = [("authorization", f"Bearer {credential()}")]
        context = tls if isinstance(tls, ssl.SSLContext) else tls()
        return await unary_call(address, CA_SIGN_PATH, request, context, metadata)

    return sign
