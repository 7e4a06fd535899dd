"""Opaque TCP through the sidecar's transparent listener, in process on real loopback sockets:
to an endpoint in the mesh the pipe speaks mutual TLS with the workload's certificate and checks
the server's identity (as the HTTP pools do); without a valid certificate it opens nothing and
says why; to an endpoint outside the mesh it is plain text. A client's half-close crosses both
kinds of connection. Each connection is in the TCP metrics with the identity the upstream
proved, and has an access-log entry when it ends, a failed one with the flag and the reason."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from tests.aio import until
from tests.tls_material import Credential, Material, make_material, spiffe, uri_sans
from tulle.engine.cluster_config import EndpointSpec, UpstreamTls
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.proxy.detecting import DetectingFront
from tulle.proxy.in_flight import InFlight
from tulle.proxy.tcp_telemetry import TcpTelemetry
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


def telemetry(mtls: MeshTls | None) -> TcpTelemetry:
    """The sidecar's TCP metrics and access log (kept in memory)."""
    metrics = MeshMetrics("frontend")
    if mtls is not None:
        metrics.use_certificate(mtls.certificate)
    return TcpTelemetry(metrics, AccessLog(io.StringIO()))


def entries(recorded: TcpTelemetry) -> list[dict[str, Any]]:
    """The access-log entries written so far."""
    recorded.log.flush()
    stream = recorded.log.stream
    assert isinstance(stream, io.StringIO)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def closed_series(recorded: TcpTelemetry) -> dict[str, str] | None:
    """The label set of the one ``tulle_tcp_connections_closed_total`` series (None: none)."""
    samples = [
        sample
        for family in recorded.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "tulle_tcp_connections_closed_total"
    ]
    assert len(samples) <= 1, samples
    return dict(samples[0].labels) if samples else None


async def sidecar(
    endpoint: EndpointSpec, mtls: MeshTls | None, recorded: TcpTelemetry | None = None
) -> int:
    """The transparent listener, its plan a TCP pipe to ``endpoint``; its port."""

    def plan(destination: tuple[str, int] | None) -> Plan:
        return ("tcp", endpoint, "db", "outbound|5432||db")

    def no_http() -> DetectingFront:
        raise AssertionError("TCP only")

    make: Callable[[], asyncio.Protocol] = lambda: TransparentOutbound(  # noqa: E731
        plan, no_http, None, InFlight(), recorded, mtls
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
        mtls = mesh_tls(material, material.frontend)
        recorded = telemetry(mtls)
        listening = await sidecar(tls_endpoint(port, BACKEND), mtls, recorded)
        assert await send_then_read(listening, b"select 1") == b"got:select 1"
        # The upstream read the app's bytes to their end (the half-close crossed as
        # close_notify) from a client that proved the workload's identity.
        assert seen == [{"peer": [spiffe("frontend")], "data": b"select 1"}]
        # The caller's side: its own identity and the one the upstream proved.
        await until(lambda: closed_series(recorded) is not None)
        assert closed_series(recorded) == {
            "reporter": "source", "source_workload": "frontend",
            "source_principal": spiffe("frontend"), "destination_service": "db",
            "destination_workload": "unknown", "destination_principal": BACKEND,
            "connection_security_policy": "unknown",
        }  # fmt: skip
        (entry,) = entries(recorded)
        assert (entry["listener"], entry["protocol"], entry["flags"], entry["reason"]) == (
            "outbound", "tcp", "-", None
        )  # fmt: skip
        assert (entry["peer_principal"], entry["upstream"], entry["cluster"]) == (
            BACKEND, f"127.0.0.1:{port}", "outbound|5432||db"
        )  # fmt: skip
        assert (entry["bytes_received"], entry["bytes_sent"], entry["source"]) == (
            8, 12, "127.0.0.1"
        )  # fmt: skip

    run(scenario())


def test_an_endpoint_presenting_another_identity_is_refused(
    material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        app, seen = await upstream(material.server_context(material.backend))
        port = app.sockets[0].getsockname()[1]
        mtls = mesh_tls(material, material.frontend)
        recorded = telemetry(mtls)
        listening = await sidecar(tls_endpoint(port, spiffe("db")), mtls, recorded)
        with caplog.at_level(logging.WARNING, logger="tulle.proxy.transparent"):
            assert await send_then_read(listening, b"select 1") in (b"", None)
            await until(lambda: caplog.records)
        reason = (
            "upstream connect mTLS: upstream peer identity "
            f"{BACKEND} is not one of [{spiffe('db')}] 127.0.0.1:{port} (cluster db)"
        )
        assert caplog.records[0].getMessage() == f"TCP connection closed: {reason}"
        # Its access-log entry: UF and the same reason; no identity was admitted.
        await until(lambda: entries(recorded) != [])
        (entry,) = entries(recorded)
        assert (entry["flags"], entry["reason"], entry["peer_principal"]) == ("UF", reason, None)
        assert (entry["upstream"], entry["bytes_sent"]) == (f"127.0.0.1:{port}", 0)
        labels = closed_series(recorded)
        assert labels is not None
        assert (labels["source_principal"], labels["destination_principal"]) == (
            "unknown", "unknown"
        )  # fmt: skip
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
        mtls = mesh_tls(material, material.expired)
        recorded = telemetry(mtls)
        listening = await sidecar(tls_endpoint(port, BACKEND), mtls, recorded)
        with caplog.at_level(logging.WARNING, logger="tulle.proxy.transparent"):
            assert await send_then_read(listening, b"select 1") in (b"", None)
            await until(lambda: caplog.records)
        message = caplog.records[0].getMessage()
        assert message.startswith(
            "TCP connection closed: upstream connect no valid workload certificate (expired "
        ), message
        assert message.endswith(f" 127.0.0.1:{port} (cluster db)")
        await until(lambda: entries(recorded) != [])
        (entry,) = entries(recorded)
        assert (entry["flags"], entry["upstream"]) == ("UF", f"127.0.0.1:{port}")
        assert entry["reason"] == message.removeprefix("TCP connection closed: ")
        assert seen == []  # not even a connection: it fails closed, never in plain text

    run(scenario())


def test_tcp_to_an_endpoint_outside_the_mesh_is_plain_text(material: Material) -> None:
    async def scenario() -> None:
        app, seen = await upstream(None)
        port = app.sockets[0].getsockname()[1]
        mtls = mesh_tls(material, material.frontend)
        recorded = telemetry(mtls)
        listening = await sidecar(EndpointSpec("127.0.0.1", port), mtls, recorded)
        assert await send_then_read(listening, b"x" * 300_000) == b"got:" + b"x" * 300_000
        assert seen == [{"peer": [], "data": b"x" * 300_000}]
        # Plain text: no principal on either side of the labels, none in the entry.
        await until(lambda: closed_series(recorded) is not None)
        labels = closed_series(recorded)
        assert labels is not None
        assert (labels["source_principal"], labels["destination_principal"]) == (
            "unknown", "unknown"
        )  # fmt: skip
        (entry,) = entries(recorded)
        assert (entry["peer_principal"], entry["flags"]) == (None, "-")
        assert (entry["bytes_received"], entry["bytes_sent"]) == (300_000, 300_004)
        received = recorded.metrics.registry.get_sample_value("tulle_tcp_sent_bytes_total", labels)
        assert received == 300_000

    run(scenario())


def test_a_service_without_an_endpoint_is_closed_with_an_entry() -> None:
    async def scenario() -> None:
        recorded = telemetry(None)

        def plan(destination: tuple[str, int] | None) -> Plan:
            return ("refuse", None, "db", "outbound|5432||db")

        def no_http() -> DetectingFront:
            raise AssertionError("TCP only")

        server = await asyncio.get_running_loop().create_server(
            lambda: TransparentOutbound(plan, no_http, None, InFlight(), recorded), "127.0.0.1", 0
        )
        SERVERS.append(server)
        assert await send_then_read(server.sockets[0].getsockname()[1], b"x") in (b"", None)
        await until(lambda: entries(recorded) != [])
        (entry,) = entries(recorded)
        assert (entry["flags"], entry["reason"], entry["listener"]) == (
            "UH", "no healthy endpoint (cluster outbound|5432||db)", "outbound"
        )  # fmt: skip
        assert (entry["service"], entry["upstream"], entry["attempts"]) == ("db", None, 0)
        assert closed_series(recorded) is None  # no pipe: not a connection in the metrics

    run(scenario())
