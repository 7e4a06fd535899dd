"""The TLS layer's client side (open_tls_connection) against asyncio's TLS servers: the peer check
by SPIFFE id, untrusted server certificates, a server refusing the client's certificate, and
connect failures and timeouts."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from tests.tls_material import NO_CERT, Material, spiffe, uri_sans
from tests.transport.tls_helpers import (
    BACKEND,
    CLEANUP,
    Log,
    Recorder,
    identity_is,
    run,
)
from tulle.transport.tls import CLOSED_AFTER_HANDSHAKE
from tulle.transport.tls_errors import PeerCert, TlsError
from tulle.transport.tls_open import open_tls_connection


async def asyncio_tls_server(context: ssl.SSLContext) -> tuple[asyncio.Server, int, Log]:
    """asyncio's own TLS server, echoing; its connections' ends are logged."""
    ended = Log()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        CLEANUP.append(writer.transport.abort)
        try:
            while data := await reader.read(65536):
                writer.write(data)
            ended.append("eof")
        except (ConnectionError, ssl.SSLError) as error:
            ended.append(error)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    CLEANUP.append(server.close)
    return server, server.sockets[0].getsockname()[1], ended


def test_open_tls_connection_to_an_asyncio_server(material: Material) -> None:
    async def scenario() -> None:
        server, port, ended = await asyncio_tls_server(material.server_context())
        checked: list[tuple[list[str], bytes | None]] = []
        check = identity_is(BACKEND)

        def verify(peercert: PeerCert | None, der: bytes | None) -> None:
            checked.append((uri_sans(peercert), der))
            check(peercert, der)

        client = await open_tls_connection(
            asyncio.get_running_loop(),
            Recorder,
            "127.0.0.1",
            port,
            material.client_context(),
            verify_peer=verify,
        )
        assert checked == [([BACKEND], material.backend.der)]
        assert client.events.items[0] == "made"  # connected before open_tls_connection returned
        assert client.transport is not None
        client.transport.write(b"hello over mTLS")
        await client.until(lambda: bytes(client.data) == b"hello over mTLS")
        client.transport.close()
        await ended.until(lambda: ended.items)
        assert ended.items == ["eof"]  # a clean close_notify, not a truncation
        await client.until(lambda: client.lost)
        assert client.lost == [None]
        # Over a socket connected beforehand (a marked one, say).
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        over_sock = await open_tls_connection(
            asyncio.get_running_loop(),
            Recorder,
            "127.0.0.1",
            port,
            material.client_context(),
            sock=sock,
            verify_peer=check,
        )
        assert over_sock.transport is not None
        over_sock.transport.write(b"over a socket")
        await over_sock.until(lambda: bytes(over_sock.data) == b"over a socket")
        over_sock.transport.close()
        server.close()
        await server.wait_closed()

    run(scenario())


def test_verify_peer_refuses_another_identity(material: Material) -> None:
    async def scenario() -> None:
        server, port, _ = await asyncio_tls_server(material.server_context())
        made: list[Recorder] = []

        def factory() -> Recorder:
            made.append(Recorder())
            return made[-1]

        with pytest.raises(TlsError) as refused:
            await open_tls_connection(
                asyncio.get_running_loop(),
                factory,
                "127.0.0.1",
                port,
                material.client_context(),
                verify_peer=identity_is(spiffe("payment")),
            )
        assert str(refused.value) == (
            f"upstream peer identity {BACKEND} is not one of ['{spiffe('payment')}']"
        )
        assert made == []  # the inner protocol was never made
        server.close()
        await server.wait_closed()

    run(scenario())


def test_an_untrusted_server_certificate_fails_the_connect(material: Material) -> None:
    async def scenario() -> None:
        server, port, _ = await asyncio_tls_server(material.server_context())
        context = material.client_context(trust=material.other_root)
        with pytest.raises(TlsError, match=r"^certificate verify failed: "):
            await open_tls_connection(
                asyncio.get_running_loop(), Recorder, "127.0.0.1", port, context
            )
        server.close()
        await server.wait_closed()

    run(scenario())


@pytest.mark.parametrize("credential", ["none", "foreign_ca", "expired"])
def test_a_server_refusing_the_client_certificate_is_an_error(
    material: Material, credential: str
) -> None:
    async def scenario() -> None:
        # asyncio's TLS server closes without sending its alert; ours sends it (see
        # test_refused_client_certificates): either way the client's connection fails.
        _, port, _ = await asyncio_tls_server(material.server_context())
        cred = NO_CERT if credential == "none" else getattr(material, credential)
        client = await open_tls_connection(
            asyncio.get_running_loop(), Recorder, "127.0.0.1", port, material.client_context(cred)
        )
        # TLS 1.3: the refusal comes after the client's handshake, as the connection's error.
        await client.until(lambda: client.lost)
        (error,) = client.lost
        assert isinstance(error, TlsError)
        assert isinstance(error, ConnectionError)
        assert error.reason == CLOSED_AFTER_HANDSHAKE
        assert client.eofs == 0
        assert client.calls == 0

    run(scenario())


def test_connect_failures_and_timeouts(material: Material) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await open_tls_connection(loop, Recorder, "127.0.0.1", port, material.client_context())
        # A server that accepts and never answers the ClientHello.
        silent = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError, match=r"^TLS handshake timed out after 0.2s$"):
            await open_tls_connection(
                loop, Recorder, "127.0.0.1", port, material.client_context(), timeout=0.2
            )
        silent.close()
        await silent.wait_closed()

    run(scenario())
