"""Opaque TCP through the sidecar's transparent listener, in process on real loopback sockets:
to an endpoint in the mesh the pipe speaks mutual TLS with the workload's certificate and checks
the server's identity (as the HTTP pools do); without a valid certificate it opens nothing and
says why; to an endpoint outside the mesh it is plain text. A client's half-close crosses both
kinds of connection."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from tests.aio import until
from tests.tls_material import Credential, Material, make_material, spiffe, uri_sans
from tulle.engine.cluster_config import EndpointSpec, UpstreamTls
from tulle.proxy.detecting import DetectingFront
from tulle.proxy.in_flight import InFlight
from tulle.proxy.transparent import Plan, TransparentOutbound
from tulle.security.material import WorkloadCredentials
from tulle.security.renewal import CertificateKeeper
from tulle.transport.mtls import MeshTls
from tulle.transport.tls import TlsProtocol

BACKEND = spiffe("backend")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("tcp"))


SERVERS: list[asyncio.Server] = []
"""Servers a scenario started: closed when it ends, however it ends."""


def run(scenario: Coroutine[Any, Any, None]) -> None:
    async def guarded() -> None:
        try:
            await asyncio.wait_for(scenario, 30)
        finally:
            for server in SERVERS:
                server.close()
            SERVERS.clear()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(guarded())


def mesh_tls(material: Material, credential: Credential) -> MeshTls:
    """The sidecar's mTLS with ``credential`` as its workload certificate."""

    async def no_ca(request: bytes) -> bytes:
        raise AssertionError("no CA in this test")

    keeper = CertificateKeeper(no_ca)
    keeper.current = WorkloadCredentials.from_pem(
        credential.key.read_bytes(), credential.cert.read_bytes(), material.root.path.read_bytes()
    )
    return MeshTls(keeper)


class AnswerAtEof(asyncio.Protocol):
    """The app upstream: reads until the client half-closes, answers ``got:<what it read>``
    and closes; records who the peer proved to be."""

    def __init__(self, seen: list[dict[str, Any]]) -> None:
        self.seen, self.data = seen, bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.seen.append({"peer": uri_sans(transport.get_extra_info("peercert"))})

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.seen[-1]["data"] = bytes(self.data)
        self.transport.write(b"got:" + bytes(self.data))
        self.transport.close()
        return True


async def upstream(context: ssl.SSLContext | None) -> tuple[asyncio.Server, list[dict[str, Any]]]:
    """The app upstream, over TLS with ``context`` (plain text without)."""
    seen: list[dict[str, Any]] = []

    def make() -> asyncio.Protocol:
        if context is None:
            return AnswerAtEof(seen)
        return TlsProtocol.server(lambda: context, lambda: AnswerAtEof(seen))

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    SERVERS.append(server)
    return server, seen


async def sidecar(endpoint: EndpointSpec, mtls: MeshTls | None) -> int:
    """The transparent listener, its plan a TCP pipe to ``endpoint``; its port."""

    def plan(destination: tuple[str, int] | None) -> Plan:
        return ("tcp", endpoint, "db", "outbound|5432||db")

    def no_http() -> DetectingFront:
        raise AssertionError("TCP only")

    make: Callable[[], asyncio.Protocol] = lambda: TransparentOutbound(  # noqa: E731
        plan, no_http, None, InFlight(), None, mtls
    )
    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    SERVERS.append(server)
    return int(server.sockets[0].getsockname()[1])


async def send_then_read(port: int, data: bytes) -> bytes | None:
    """The app's side: send, half-close, read until the end (None: the connection was reset,
    as a proxy closing with the app's bytes unread resets it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    try:
        return await reader.read()
    except ConnectionResetError:
        return None
    finally:
        writer.close()


def tls_endpoint(port: int, *identities: str) -> EndpointSpec:
    sni = "outbound_.5432_._.db.default.svc.cluster.local"
    return EndpointSpec("127.0.0.1", port, tls=UpstreamTls(sni, frozenset(identities), ()))


def test_tcp_to_an_endpoint_in_the_mesh_is_mutual_tls(material: Material) -> None:
    async def scenario() -> None:
        app, seen = await upstream(material.server_context(material.backend))
        port = app.sockets[0].getsockname()[1]
        listening = await sidecar(
            tls_endpoint(port, BACKEND), mesh_tls(material, material.frontend)
        )
        assert await send_then_read(listening, b"select 1") == b"got:select 1"
        # The upstream read the app's bytes to their end (the half-close crossed as
        # close_notify) from a client that proved the workload's identity.
        assert seen == [{"peer": [spiffe("frontend")], "data": b"select 1"}]

    run(scenario())


def test_an_endpoint_presenting_another_identity_is_refused(
    material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        app, seen = await upstream(material.server_context(material.backend))
        port = app.sockets[0].getsockname()[1]
        listening = await sidecar(
            tls_endpoint(port, spiffe("db")), mesh_tls(material, material.frontend)
        )
        with caplog.at_level(logging.WARNING, logger="tulle.proxy.transparent"):
            assert await send_then_read(listening, b"select 1") in (b"", None)
            await until(lambda: caplog.records)
        assert caplog.records[0].getMessage() == (
            "TCP connection closed: upstream connect mTLS: upstream peer identity "
            f"{BACKEND} is not one of [{spiffe('db')}] 127.0.0.1:{port} (cluster db)"
        )
        # The server's handshake ended before the client checked it; the client then closed
        # (close_notify) without a byte of the app's. (The server sees that close in its own
        # time: the client's log line can come first on a busy machine.)
        await until(lambda: bool(seen) and "data" in seen[-1])
        assert [connection.get("data", b"") for connection in seen] == [b""]

    run(scenario())


def test_without_a_valid_certificate_nothing_is_opened(
    material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        app, seen = await upstream(material.server_context(material.backend))
        port = app.sockets[0].getsockname()[1]
        listening = await sidecar(tls_endpoint(port, BACKEND), mesh_tls(material, material.expired))
        with caplog.at_level(logging.WARNING, logger="tulle.proxy.transparent"):
            assert await send_then_read(listening, b"select 1") in (b"", None)
            await until(lambda: caplog.records)
        message = caplog.records[0].getMessage()
        assert message.startswith(
            "TCP connection closed: upstream connect no valid workload certificate (expired "
        ), message
        assert message.endswith(f" 127.0.0.1:{port} (cluster db)")
        assert seen == []  # not even a connection: it fails closed, never in plain text

    run(scenario())


def test_tcp_to_an_endpoint_outside_the_mesh_is_plain_text(material: Material) -> None:
    async def scenario() -> None:
        app, seen = await upstream(None)
        port = app.sockets[0].getsockname()[1]
        listening = await sidecar(
            EndpointSpec("127.0.0.1", port), mesh_tls(material, material.frontend)
        )
        assert await send_then_read(listening, b"x" * 300_000) == b"got:" + b"x" * 300_000
        assert seen == [{"peer": [], "data": b"x" * 300_000}]

    run(scenario())
