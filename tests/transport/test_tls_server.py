"""The TLS layer's server side on real loopback sockets, with real clients: Python's ssl (asyncio
streams, on uvloop and asyncio), ``openssl s_client``, curl and httpx over HTTP/2. mTLS with
SPIFFE identities, refused client certificates and their reasons, plain text and silence on a
TLS port, and a rotated certificate."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.tls_material import NO_CERT, Material, uri_sans
from tests.transport.tls_helpers import (
    FRONTEND,
    Recorder,
    curl,
    echo,
    exchange,
    in_trust_domain,
    need,
    run,
    serve,
)
from tulle.transport.tls_errors import PeerCert, TlsError
from tulle.transport.tls_open import open_tls_connection


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_mtls_echo_with_a_python_client(material: Material, loop: str) -> None:
    async def scenario() -> None:
        server = await serve(echo, material.server_context())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=material.client_context()
        )
        assert await exchange(reader, writer, b"ping") == b"ping"
        assert await exchange(reader, writer, b"x" * 100_000) == b"x" * 100_000
        inner = server.served[0]
        assert inner.transport is not None
        # The identity is there from the first data_received on.
        assert uri_sans(inner.first_peercert) == [FRONTEND]
        assert inner.transport.get_extra_info("peer_certificate_der") == material.frontend.der
        assert inner.transport.get_extra_info("cipher")[1] == "TLSv1.3"
        assert isinstance(inner.transport.get_extra_info("ssl_object"), ssl.SSLObject)
        assert inner.transport.get_extra_info("peername") == writer.get_extra_info("sockname")
        assert inner.transport.get_extra_info("sockname")[1] == server.port
        assert inner.transport.get_extra_info("socket") is not None
        assert inner.transport.get_extra_info("nothing", "default") == "default"
        assert inner.transport.can_write_eof()  # a half-close is close_notify, then the FIN

        writer.close()  # close_notify, then FIN
        await inner.until(lambda: inner.lost)
        assert inner.eofs == 1
        assert inner.lost == [None]
        assert server.refused.items == []
        await server.close()

    run(scenario(), loop)


class LineEcho(Recorder):
    """Answers the first line in upper case and the peer's SPIFFE id, then closes."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if b"\n" in self.data and self.transport is not None:
            uris = uri_sans(self.transport.get_extra_info("peercert"))
            self.transport.write(bytes(self.data).upper() + " ".join(uris).encode() + b"\n")
            self.transport.close()


async def openssl_client(port: int, material: Material, *extra: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        need("openssl"),
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-CAfile",
        str(material.root.path),
        "-verify_return_error",
        "-quiet",
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(b"hello\n"), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out, err


def test_openssl_s_client_with_a_certificate(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(LineEcho, material.server_context())
        code, out, _ = await openssl_client(
            server.port,
            material,
            "-cert",
            str(material.frontend.cert),
            "-key",
            str(material.frontend.key),
        )
        assert out == f"HELLO\n{FRONTEND}\n".encode()
        assert code == 0
        inner = server.served[0]
        await inner.until(lambda: inner.lost)
        assert inner.lost == [None]
        assert server.refused.items == []
        await server.close()

    run(scenario())


def test_openssl_s_client_without_a_certificate_is_refused(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(LineEcho, material.server_context())
        code, out, err = await openssl_client(server.port, material)
        await server.refused.until(lambda: server.refused.items)
        (peer, reason), *_ = server.refused.items
        assert reason == "peer did not present a certificate"
        assert peer[0] == "127.0.0.1"
        assert out == b""
        assert b"certificate required" in err  # the alert s_client received
        assert code != 0
        assert server.served == []  # no inner protocol for a refused connection
        await server.close()

    run(scenario())


@pytest.mark.parametrize(
    ("credential", "reason", "client_sees"),
    [
        ("none", "peer did not present a certificate", "certificate required"),
        ("expired", "certificate verify failed: certificate has expired", "certificate expired"),
        (
            "foreign_ca",
            "certificate verify failed: unable to get local issuer certificate",
            "unknown ca",
        ),
        (
            "foreign_domain",
            "peer spiffe://other.example/ns/default/sa/frontend is not in cluster.local",
            None,
        ),
    ],
)
def test_refused_client_certificates(
    material: Material, credential: str, reason: str, client_sees: str | None
) -> None:
    async def scenario() -> None:
        server = await serve(echo, material.server_context(), verify_peer=in_trust_domain)
        context = material.client_context(
            NO_CERT if credential == "none" else getattr(material, credential)
        )
        # TLS 1.3: the client's handshake ends before the server has checked its certificate.
        client = await open_tls_connection(
            asyncio.get_running_loop(), Recorder, "127.0.0.1", server.port, context
        )
        await client.until(lambda: client.lost)
        await server.refused.until(lambda: server.refused.items)
        assert [item[1] for item in server.refused.items] == [reason]
        assert server.served == []
        (error,) = client.lost
        if client_sees is None:  # refused after the handshake by verify_peer: close_notify
            assert error is None
            assert client.eofs == 1
        else:  # the server's alert
            assert isinstance(error, TlsError)
            assert error.reason == f"alert from peer: {client_sees}"
        await server.close()

    run(scenario())


def test_plain_text_to_a_tls_port_is_not_tls(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(echo, material.server_context())
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), 10)  # closed (after an alert, or reset)
        await server.refused.until(lambda: server.refused.items)
        assert [item[1] for item in server.refused.items] == ["not TLS"]
        writer.close()
        await server.close()

    run(scenario())


def test_silence_times_out_and_a_bare_connect_is_not_reported(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(echo, material.server_context(), handshake_timeout=0.3)
        # A TCP health check: connect, close. The server closes its side in turn, unreported.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert server.refused.items == []
        # One byte of a handshake record, then nothing.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x16")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert [item[1] for item in server.refused.items] == ["handshake timed out after 0.3s"]
        writer.close()
        await server.close()

    run(scenario())


class TinyHttp(Recorder):
    """HTTP/1.1, one request: answers 200 with the caller's SPIFFE id and the ALPN protocol."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if b"\r\n\r\n" in self.data and self.transport is not None:
            body = " ".join(uri_sans(self.transport.get_extra_info("peercert"))).encode()
            head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            self.transport.write(head % len(body) + body)
            self.transport.close()


def test_curl_with_a_client_certificate(material: Material) -> None:
    async def scenario() -> None:
        server = await serve(TinyHttp, material.server_context())
        cert = ("--cert", str(material.frontend.cert), "--key", str(material.frontend.key))
        code, out, err = await curl(server.port, material, *cert)
        assert (code, out) == (0, FRONTEND.encode()), err
        # Without one: refused, and the reason is reported.
        code, out, err = await curl(server.port, material)
        assert code != 0
        assert out == b""
        await server.refused.until(lambda: server.refused.items)
        assert [item[1] for item in server.refused.items] == ["peer did not present a certificate"]
        await server.close()

    run(scenario())


class H2Answer(Recorder):
    """HTTP/2 (h2): answers each request with the ALPN protocol and the caller's SPIFFE id."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        assert self.transport is not None
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                alpn = self.transport.get_extra_info("alpn_protocol")
                uris = uri_sans(self.transport.get_extra_info("peercert"))
                body = f"{alpn} {' '.join(uris)}".encode()
                headers = [(":status", "200"), ("content-length", str(len(body)))]
                self.h2.send_headers(event.stream_id, headers)
                self.h2.send_data(event.stream_id, body, end_stream=True)
        self.transport.write(self.h2.data_to_send())


def test_httpx_over_http2_negotiates_h2(material: Material) -> None:
    async def scenario() -> None:
        context = material.server_context(alpn=("h2", "http/1.1"))
        server = await serve(H2Answer, context)
        async with httpx.AsyncClient(http2=True, verify=material.client_context()) as client:
            for _ in range(3):  # one connection, three streams
                response = await client.get(f"https://127.0.0.1:{server.port}/")
                assert response.http_version == "HTTP/2"
                assert response.text == f"h2 {FRONTEND}"
        inner = server.served[0]
        assert len(server.served) == 1
        assert inner.transport.get_extra_info("selected_alpn_protocol") == "h2"
        await server.close()

    run(scenario())


def test_a_rotated_certificate_serves_new_connections_only(material: Material) -> None:
    async def scenario() -> None:
        current = [material.server_context()]
        server = await serve(echo, lambda: current[0])
        loop = asyncio.get_running_loop()
        seen: list[bytes | None] = []

        def remember(peercert: PeerCert | None, der: bytes | None) -> None:
            seen.append(der)

        def connect() -> Awaitable[Recorder]:
            context = material.client_context()
            return open_tls_connection(
                loop, Recorder, "127.0.0.1", server.port, context, verify_peer=remember
            )

        first = await connect()
        current[0] = material.server_context(material.backend_rotated)
        second = await connect()
        assert seen == [material.backend.der, material.backend_rotated.der]
        for client in (first, second):  # the old connection carries on with its certificate
            assert client.transport is not None
            client.transport.write(b"still here")
            await client.until(lambda: len(client.data) == len(b"still here"))  # noqa: B023
            assert bytes(client.data) == b"still here"
            client.transport.close()
        await server.close()

    run(scenario())
