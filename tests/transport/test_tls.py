"""The data plane's TLS layer on real loopback sockets, with real peers: Python's ssl (asyncio
streams and blocking sockets), ``openssl s_client``, curl, httpx over HTTP/2, and itself. mTLS
with SPIFFE identities, refusals and their reasons, STRICT/PERMISSIVE/DISABLE ports, the client
side with its peer check, protocol swaps, back-pressure, closing, and large bodies."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import ssl
import struct
import termios
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import uvloop

from tests.aio import until
from tests.tls_material import NO_CERT, SERVER_DNS, Material, make_material, spiffe, uri_sans
from tulle.transport.tls import CLOSED_AFTER_HANDSHAKE, FEED_SLICE, TlsProtocol
from tulle.transport.tls_errors import PeerCert, TlsError
from tulle.transport.tls_open import PLAIN_REFUSED, TlsOrPlain, open_tls_connection
from tulle.transport.tls_transport import WRITE_SLICE

FRONTEND = spiffe("frontend")
BACKEND = spiffe("backend")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("tls"))


def run(scenario: Coroutine[Any, Any, None], loop: str = "uvloop", timeout: float = 30) -> None:
    """Run ``scenario`` on a fresh loop (uvloop, as the sidecar, unless told otherwise); the
    servers it started are closed however it ends."""

    async def guarded() -> None:
        try:
            await asyncio.wait_for(scenario, timeout)
        finally:
            for close in reversed(CLEANUP):
                close()
            CLEANUP.clear()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(guarded())


CLEANUP: list[Callable[[], None]] = []
"""What to close when a scenario ends (servers, their connections), even when it fails."""


class Log:
    """Things that happened, and a way to wait for the next."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.changed = asyncio.Event()

    def append(self, item: Any) -> None:
        self.items.append(item)
        self.changed.set()

    async def until(self, condition: Callable[[], object], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


class Recorder(asyncio.Protocol):
    """An inner protocol that records what it is told; echoes when asked to."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.calls = 0
        self.first_peercert: PeerCert | None = None
        self.eofs = 0
        self.lost: list[Exception | None] = []
        self.paused = 0
        self.resumed = 0
        self.events = Log()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.calls == 0:
            self.first_peercert = self.transport.get_extra_info("peercert")
        self.calls += 1
        self.data += data
        if self.echo:
            self.transport.write(data)
        self.events.append("data")

    def eof_received(self) -> bool | None:
        self.eofs += 1
        self.events.append("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.events.append("lost")

    def pause_writing(self) -> None:
        self.paused += 1
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.resumed += 1
        self.events.append("resume")

    async def until(self, condition: Callable[[], object], timeout: float = 10) -> None:
        await self.events.until(condition, timeout)


class TlsServer:
    """A TlsProtocol server on 127.0.0.1 whose inner protocols and refusals are kept."""

    def __init__(self, server: asyncio.Server, served: list[Any], refused: Log) -> None:
        self.server = server
        self.port: int = server.sockets[0].getsockname()[1]
        self.served = served
        self.refused = refused

    async def close(self) -> None:
        self.server.close()
        for inner in self.served:
            if inner.transport is not None:
                inner.transport.abort()
        await self.server.wait_closed()


async def serve(
    inner: Callable[[], asyncio.Protocol],
    context: ssl.SSLContext | Callable[[], ssl.SSLContext],
    mode: str | None = None,
    **options: Any,
) -> TlsServer:
    """Serve ``inner`` over TLS (``TlsProtocol.server``, or ``TlsOrPlain`` with ``mode``)."""
    provider = context if callable(context) else (lambda: context)
    served: list[Any] = []
    refused = Log()

    def factory() -> asyncio.Protocol:
        protocol = inner()
        served.append(protocol)
        return protocol

    def on_refused(peer: Any, reason: str) -> None:
        refused.append((peer, reason))

    def make() -> asyncio.Protocol:
        if mode is None:
            return TlsProtocol.server(provider, factory, on_refused, **options)
        return TlsOrPlain(mode, provider, factory, on_refused, **options)  # type: ignore[arg-type]

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    tls_server = TlsServer(server, served, refused)
    CLEANUP.append(server.close)
    CLEANUP.append(lambda: abort_all(served))
    return tls_server


def abort_all(served: list[Any]) -> None:
    for inner in served:
        if inner.transport is not None:
            inner.transport.abort()


def echo() -> Recorder:
    return Recorder(echo=True)


def identity_is(*allowed: str) -> Callable[[PeerCert | None, bytes | None], None]:
    """A verify_peer for tests: the peer's SPIFFE id must be one of ``allowed`` (what
    tulle.security does for the mesh)."""

    def verify(peercert: PeerCert | None, der: bytes | None) -> None:
        uris = uri_sans(peercert)
        if not any(uri in allowed for uri in uris):
            raise ValueError(
                f"upstream peer identity {uris[0] if uris else 'none'} is not one of {list(allowed)}"
            )

    return verify


def in_trust_domain(peercert: PeerCert | None, der: bytes | None) -> None:
    uris = uri_sans(peercert)
    if not uris or not uris[0].startswith("spiffe://cluster.local/"):
        raise ValueError(f"peer {uris[0] if uris else 'without SPIFFE id'} is not in cluster.local")


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes):
    writer.write(data)
    return await asyncio.wait_for(reader.readexactly(len(data)), 10)


# --- the server side with Python, openssl and curl clients ------------------------------------


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


def need(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        pytest.skip(f"{command} is not installed")
    return path


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


async def curl(port: int, material: Material, *extra: str) -> tuple[int, bytes, bytes]:
    # The server's leaf carries a DNS SAN (SERVER_DNS) beside its SPIFFE id, and --resolve
    # points that name at 127.0.0.1: curl checks the chain against --cacert *and* the host name,
    # with neither --insecure nor a certificate made for an IP address.
    process = await asyncio.create_subprocess_exec(
        need("curl"),
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        str(material.root.path),
        "--resolve",
        f"{SERVER_DNS}:{port}:127.0.0.1",
        *extra,
        f"https://{SERVER_DNS}:{port}/who",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode is not None
    return process.returncode, out, err


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


# --- one port, three modes --------------------------------------------------------------------


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


# --- the client side --------------------------------------------------------------------------


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


# --- protocol swaps, back-pressure, closing, large bodies -------------------------------------


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


# --- with the sidecar's own front end ---------------------------------------------------------


def test_the_sidecars_detecting_front_behind_a_permissive_port(material: Material) -> None:
    """The proxy's DetectingFront swaps its transport's protocol to the HTTP/1.1 or HTTP/2
    front end it picks: over TLS that transport is a TlsTransport, and what follows the swap
    must reach the new front end. curl over mTLS (HTTP/1.1, and HTTP/2 by ALPN) and in plain
    text, on one PERMISSIVE port."""
    import io

    from tulle.engine.message import Request, Response
    from tulle.obs.access_log import AccessLog
    from tulle.obs.metrics import MeshMetrics
    from tulle.proxy.detecting import DetectingFront
    from tulle.proxy.h2_front import H2Front
    from tulle.proxy.http_front import Http1Front
    from tulle.proxy.in_flight import InFlight
    from tulle.proxy.recording import Destination
    from tulle.proxy.recording import Recorder as ProxyRecorder

    recorder = ProxyRecorder(AccessLog(io.StringIO()), MeshMetrics("inbound"))
    in_flight = InFlight()

    def answer(request: Request, destination: Destination, done: Callable[[Response], None]):
        done(Response(200, [("content-type", "text/plain")], b"hello " + request.path.encode()))
        return lambda: None

    def front() -> DetectingFront:
        return DetectingFront(
            lambda: Http1Front("inbound", answer, recorder, in_flight),
            lambda dst: H2Front("inbound", answer, recorder, in_flight, dst),
            in_flight,
        )

    async def scenario() -> None:
        context = material.server_context(alpn=("h2", "http/1.1"))
        server = await serve(front, context, mode="PERMISSIVE")
        cert = ("--cert", str(material.frontend.cert), "--key", str(material.frontend.key))
        for version in ("--http1.1", "--http2"):
            code, out, err = await curl(
                server.port, material, *cert, version, "-w", " %{http_version}"
            )
            assert (code, out) == (
                0,
                b"hello /who " + (b"2" if version == "--http2" else b"1.1"),
            ), err
        process = await asyncio.create_subprocess_exec(
            need("curl"),
            "-sS",
            "--max-time",
            "10",
            f"http://127.0.0.1:{server.port}/plain",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 15)
        assert out == b"hello /plain"
        assert server.refused.items == []

    run(scenario())


# --- byte by byte, on a transport that keeps what is written ----------------------------------


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
