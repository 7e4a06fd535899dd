"""One port, three modes (TlsOrPlain): PERMISSIVE takes plain text and mTLS on one port, STRICT
refuses plain text, DISABLE passes a ClientHello on as bytes."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import pytest

from tests.aio import until
from tests.tls_material import Material, uri_sans
from tests.transport.tls_helpers import (
    BACKEND,
    FRONTEND,
    Recorder,
    echo,
    exchange,
    identity_is,
    run,
    serve,
)
from tulle.transport.tls_open import PLAIN_REFUSED, TlsOrPlain, open_tls_connection


def test_permissive_takes_plain_text_and_mtls_on_one_port(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(echo, material.server_context(), mode="PERMISSIVE")
        plain = await asyncio.open_connection("127.0.0.1", server.port)
        assert await exchange(*plain, b"plain hello") == b"plain hello"
        tls = await asyncio.open_connection("127.0.0.1", server.port, ssl=material.client_context())
        assert await exchange(*tls, b"tls hello") == b"tls hello"
        ours = await open_tls_connection(
            asyncio.get_running_loop(),
            Recorder,
            "127.0.0.1",
            server.port,
            material.client_context(),
            verify_peer=identity_is(BACKEND),
        )
        assert ours.transport is not None
        ours.transport.write(b"ours")
        await ours.until(lambda: bytes(ours.data) == b"ours")

        plain_inner, tls_inner, our_inner = server.served
        assert plain_inner.transport.get_extra_info("ssl_object") is None
        assert plain_inner.first_peercert is None
        assert uri_sans(tls_inner.first_peercert) == [FRONTEND]
        assert uri_sans(our_inner.first_peercert) == [FRONTEND]
        assert server.refused.items == []
        for _, writer in (plain, tls):
            writer.close()
        ours.transport.close()
        await server.close()

    run(scenario())


def test_strict_refuses_plain_text_and_takes_mtls(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(echo, material.server_context(), mode="STRICT")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: backend\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 10) == b""
        assert server.refused.items == [(writer.get_extra_info("sockname"), PLAIN_REFUSED)]
        assert PLAIN_REFUSED == "plain text refused: STRICT mTLS"
        writer.close()

        tls = await asyncio.open_connection("127.0.0.1", server.port, ssl=material.client_context())
        assert await exchange(*tls, b"mtls") == b"mtls"
        assert len(server.served) == 1  # the plain-text connection never reached one
        tls[1].close()
        await server.close()

    run(scenario())


def client_hello(material: Material) -> bytes:
    """The first flight of a TLS client, as bytes."""
    sslobj = material.client_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


def test_disable_passes_a_client_hello_on_as_bytes(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(Recorder, None, mode="DISABLE")  # type: ignore[arg-type]
        hello = client_hello(material)
        assert hello[0] == 0x16
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(hello)
        await until(lambda: server.served and len(server.served[0].data) == len(hello))
        inner = server.served[0]
        assert bytes(inner.data) == hello
        assert inner.transport.get_extra_info("ssl_object") is None
        writer.close()
        await server.close()

    run(scenario())


def test_tls_or_plain_checks_its_mode() -> None:
    with pytest.raises(ValueError, match="not STRICT, PERMISSIVE or DISABLE"):
        TlsOrPlain("OFF", None, Recorder)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a context provider"):
        TlsOrPlain("STRICT", None, Recorder)
