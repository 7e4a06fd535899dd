"""The TLS layer byte by byte, on a transport that keeps what is written: a ClientHello fed one
byte at a time, and records that wait for resume_reading."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import pytest

from tests.tls_material import Material, uri_sans
from tests.transport.tls_helpers import (
    FRONTEND,
    Recorder,
    run,
)
from tulle.transport.tls import TlsProtocol


class KeptRaw(asyncio.Transport):
    """A raw transport that keeps what is written, for driving a TlsProtocol by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.7", 40000) if name == "peername" else default

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


class PausedFromTheStart(Recorder):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()


def test_a_client_hello_byte_by_byte_and_records_that_wait_for_resume(material: Material) -> None:
    async def scenario() -> None:
        tls = TlsProtocol.server(
            material.server_context, PausedFromTheStart, handshake_timeout=None
        )
        raw = KeptRaw()
        tls.connection_made(raw)
        client = material.client_context().wrap_bio(
            client_in := ssl.MemoryBIO(), client_out := ssl.MemoryBIO()
        )
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        for byte in client_out.read():  # the ClientHello as a slow client sends it
            tls.data_received(bytes([byte]))
        client_in.write(raw.take())
        client.do_handshake()
        client.write(b"sent with the Finished")
        tls.data_received(client_out.read())  # the client's last flight and its first record
        inner = tls.inner
        assert isinstance(inner, PausedFromTheStart)
        assert inner.transport is not None
        assert uri_sans(inner.transport.get_extra_info("peercert")) == [FRONTEND]
        assert not raw.reading
        assert inner.calls == 0  # paused from its connection_made on: the record waits
        inner.transport.resume_reading()
        assert raw.reading
        await inner.until(lambda: inner.calls)
        assert bytes(inner.data) == b"sent with the Finished"
        # And back: the inner protocol's answer is one record the client reads.
        inner.transport.write(b"answer")
        client_in.write(raw.take())
        received = b""
        with contextlib.suppress(ssl.SSLWantReadError):
            while chunk := client.read(1024):
                received += chunk
        assert received == b"answer"

    run(scenario())
