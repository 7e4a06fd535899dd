"""The TLS transport as the inner protocol sees it: protocol swaps, half-close each way,
back-pressure (pause_writing, pause_reading), close and abort, a corrupt record, several MiB
both ways, and no reference cycle left behind."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import socket
import ssl
import struct
import termios
from typing import Any

import pytest

from tests.aio import until
from tests.tls_material import Material
from tests.transport.tls_helpers import (
    BACKEND,
    Recorder,
    echo,
    exchange,
    identity_is,
    run,
    serve,
)
from tulle.transport.tls import FEED_SLICE, TlsProtocol
from tulle.transport.tls_errors import TlsError
from tulle.transport.tls_open import open_tls_connection
from tulle.transport.tls_transport import WRITE_SLICE


class Swapper(Recorder):
    """Takes the first message, answers it, then hands the connection to ``self.next``."""

    def __init__(self) -> None:
        super().__init__()
        self.next = Recorder(echo=True)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        assert self.transport is not None
        self.transport.set_protocol(self.next)
        self.next.connection_made(self.transport)
        self.transport.write(b"A:" + data)


def test_set_protocol_sends_what_follows_to_the_new_protocol(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(Swapper, material.server_context())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=material.client_context()
        )
        writer.write(b"one")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"A:one"
        assert await exchange(reader, writer, b"two") == b"two"
        first = server.served[0]
        assert first.transport.get_protocol() is first.next
        assert bytes(first.data) == b"one"
        assert bytes(first.next.data) == b"two"
        writer.close()
        await first.next.until(lambda: first.next.lost)
        assert first.next.lost == [None]
        assert first.lost == []  # the protocol swapped out hears nothing more
        await server.close()

    run(scenario())


class AnswerAtEof(Recorder):
    """Reads until the peer half-closes, then answers what it read and closes."""

    def eof_received(self) -> bool | None:
        super().eof_received()
        assert self.transport is not None
        self.transport.write(b"you said: " + bytes(self.data))
        self.transport.close()
        return True  # still writing: the answer comes after the peer's EOF


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_half_close_passes_each_way_and_the_other_side_still_writes(
    material: Material, loop: str
) -> None:
    # As a protocol over opaque TCP does (send, shut the write side, read the answer): the
    # client's close_notify is the server's EOF, the server answers after it, and the client
    # reads that answer after its own close_notify (OpenSSL then reports the server's
    # close_notify as an error, not an EOF, unless it is read as one).
    async def scenario() -> None:
        server = await serve(AnswerAtEof, material.server_context())
        client = await open_tls_connection(
            asyncio.get_running_loop(), Recorder, "127.0.0.1", server.port,
            material.client_context(), verify_peer=identity_is(BACKEND),
        )  # fmt: skip
        assert client.transport is not None
        client.transport.write(b"x" * 20_000)
        client.transport.write_eof()
        assert not client.transport.is_closing()
        client.transport.write_eof()  # once is enough: nothing more is sent
        await client.until(lambda: client.lost)
        assert bytes(client.data) == b"you said: " + b"x" * 20_000
        assert client.eofs == 1
        assert client.lost == [None]  # a clean end both ways, no TLS error
        inner = server.served[0]
        assert inner.eofs == 1
        await inner.until(lambda: inner.lost)
        assert inner.lost == [None]
        assert server.refused.items == []
        await server.close()

    run(scenario(), loop)


class Flooder(Recorder):
    """Writes until the transport says stop."""

    chunk = b"f" * 65536

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=65536)
        assert self.transport.get_write_buffer_limits() == (16384, 65536)
        self.written = 0
        while not self.paused and self.written < 256 * 1024 * 1024:
            self.transport.write(self.chunk)
            self.written += len(self.chunk)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_pause_writing_reaches_the_inner_protocol(material: Material, loop: str) -> None:
    async def scenario() -> None:
        server = await serve(Flooder, material.server_context())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=material.client_context()
        )
        await until(lambda: server.served)
        inner = server.served[0]
        assert inner.paused == 1  # the socket's buffer filled: the inner protocol was told
        assert inner.transport.get_write_buffer_size() > 65536
        assert inner.resumed == 0
        received = await asyncio.wait_for(reader.readexactly(inner.written), 20)
        assert received == Flooder.chunk * (inner.written // len(Flooder.chunk))
        await inner.until(lambda: inner.resumed)
        assert inner.resumed == 1
        writer.close()
        await server.close()

    run(scenario(), loop)


def unread_bytes(sock: Any) -> int:
    """Bytes waiting in the kernel's receive queue of ``sock``."""
    answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    return int(struct.unpack("i", answer)[0])


class PauseOnFirst(Recorder):
    """Pauses reading as soon as it gets data, and acknowledges it."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        assert self.transport is not None
        if self.calls == 1:
            self.transport.pause_reading()
            self.transport.write(b"paused")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_pause_reading_stops_delivery_until_resumed(material: Material, loop: str) -> None:
    async def scenario() -> None:
        server = await serve(PauseOnFirst, material.server_context())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=material.client_context()
        )
        writer.write(b"first")
        assert await asyncio.wait_for(reader.readexactly(6), 10) == b"paused"
        inner = server.served[0]
        assert not inner.transport.is_reading()
        writer.write(b"second")
        # The record reaches the server's socket and stays there: nothing is decrypted for the
        # inner protocol while it is paused.
        raw_socket = inner.transport.get_extra_info("socket")
        await until(lambda: unread_bytes(raw_socket) > 0)
        assert bytes(inner.data) == b"first"
        inner.transport.resume_reading()
        assert inner.transport.is_reading()
        await inner.until(lambda: bytes(inner.data) == b"firstsecond")
        assert inner.calls == 2
        writer.close()
        await server.close()

    run(scenario(), loop)


class CloseOnFirst(Recorder):
    """Answers the first data, then closes (or aborts) its transport."""

    abort = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        assert self.transport is not None
        self.transport.write(b"bye")
        if self.abort:
            self.transport.abort()
        else:
            self.transport.close()
        assert self.transport.is_closing()
        self.transport.write(b"dropped after close")  # ignored, as asyncio's transports do


class AbortOnFirst(CloseOnFirst):
    abort = True


def blocking_client(material: Material, port: int) -> tuple[bytes, str]:
    """A blocking ssl socket that treats a FIN without close_notify as an error (so that a
    clean end means the server sent close_notify)."""
    context = material.client_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, suppress_ragged_eofs=False) as tls,
    ):
        tls.sendall(b"hi")
        received = b""
        try:
            while chunk := tls.recv(65536):
                received += chunk
        except (ssl.SSLEOFError, ConnectionError) as error:
            return received, type(error).__name__
        return received, "close_notify"


@pytest.mark.parametrize(
    ("inner", "end"), [(CloseOnFirst, "close_notify"), (AbortOnFirst, "abort")]
)
def test_close_and_abort_end_the_inner_protocol_once(
    material: Material, inner: type[CloseOnFirst], end: str
) -> None:
    async def scenario() -> None:
        server = await serve(inner, material.server_context())
        loop = asyncio.get_running_loop()
        received, how = await loop.run_in_executor(None, blocking_client, material, server.port)
        protocol = server.served[0]
        await protocol.until(lambda: protocol.lost)
        assert protocol.lost == [None]
        if end == "close_notify":
            assert (received, how) == (b"bye", "close_notify")
        else:  # what the socket took at once may have gone out, but no close_notify
            assert received in (b"", b"bye")
            assert how in ("SSLEOFError", "ConnectionResetError")
        await server.close()
        assert protocol.lost == [None]  # still once

    run(scenario())


def test_a_corrupt_record_ends_the_inner_protocol_with_the_reason(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(Recorder, material.server_context())
        loop = asyncio.get_running_loop()
        client = TlsProtocol.client(material.client_context(), Recorder)
        raw, _ = await loop.create_connection(lambda: client, "127.0.0.1", server.port)
        await until(lambda: server.served)
        inner = server.served[0]
        raw.write(b"\x17\x03\x03\x00\x20" + bytes(32))  # application data that fails to decrypt
        await inner.until(lambda: inner.lost)
        (error,) = inner.lost
        assert isinstance(error, TlsError)
        assert "bad record mac" in error.reason or "decryption failed" in error.reason
        raw.close()
        await server.close()

    run(scenario())


def test_several_mib_both_ways_intact(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(echo, material.server_context())
        client = await open_tls_connection(
            asyncio.get_running_loop(),
            Recorder,
            "127.0.0.1",
            server.port,
            material.client_context(),
            verify_peer=identity_is(BACKEND),
        )
        body = os.urandom(6 * 1024 * 1024 + 12345)  # not a multiple of any slice
        assert client.transport is not None
        client.transport.write(body[:100])
        client.transport.writelines([body[100:4_000_000], memoryview(body)[4_000_000:]])
        await client.until(lambda: len(client.data) >= len(body), timeout=30)
        assert hashlib.sha256(client.data).digest() == hashlib.sha256(body).digest()
        inner = server.served[0]
        assert hashlib.sha256(inner.data).digest() == hashlib.sha256(body).digest()
        # Reads came in large pieces, not one call per record.
        assert client.calls < len(body) // WRITE_SLICE
        assert inner.calls < len(body) // FEED_SLICE
        client.transport.close()
        await inner.until(lambda: inner.lost)
        assert inner.lost == [None]
        await server.close()

    run(scenario())


def test_a_closed_connection_leaves_no_reference_cycle(material: Material) -> None:
    from tests.cycles import cycle_garbage_of

    async def scenario() -> None:
        server = await serve(echo, material.server_context())
        loop = asyncio.get_running_loop()
        context = material.client_context()

        async def one_connection() -> None:
            client = await open_tls_connection(loop, Recorder, "127.0.0.1", server.port, context)
            assert client.transport is not None
            client.transport.write(b"x")
            await client.until(lambda: client.data)
            client.transport.close()
            await client.until(lambda: client.lost)
            served = server.served.pop()
            await served.until(lambda: served.lost)

        assert await cycle_garbage_of(one_connection, 5) == 0
        await server.close()

    run(scenario())
