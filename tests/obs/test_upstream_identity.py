"""What the caller's telemetry learns from its mTLS connections, on real loopback sockets and
real TLS: the pool puts the identity the upstream proved on each response (so the metrics'
``destination_principal`` and the access log's ``peer_principal`` are that of the connection
the request went over), and every failed mTLS connection is counted by cause in
``tulle_upstream_tls_failures_total``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from typing import Any

import pytest
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from tests.tls_material import Credential, Material, make_material, spiffe
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec, UpstreamTls
from tulle.engine.message import Request, UpstreamError, finished
from tulle.obs.metrics import MeshMetrics
from tulle.security.material import WorkloadCredentials
from tulle.security.renewal import CertificateKeeper
from tulle.transport.mtls import MeshTls
from tulle.transport.pool import Http1Pool
from tulle.transport.tls import TlsProtocol

BACKEND = spiffe("backend")
FRONTEND = spiffe("frontend")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("upstream-identity"))


def run(scenario: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario, 30))


def keeper_with(material: Material, credential: Credential | None) -> CertificateKeeper:
    async def no_ca(request: bytes) -> bytes:
        raise ConnectionError("the CA is away")

    keeper = CertificateKeeper(no_ca)
    if credential is not None:
        keeper.current = WorkloadCredentials.from_pem(
            credential.key.read_bytes(), credential.cert.read_bytes(),
            material.root.path.read_bytes(),
        )  # fmt: skip
    return keeper


class Answer(asyncio.Protocol):
    """An HTTP/1.1 upstream that answers every request ``200 ok``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


async def tls_upstream(context: ssl.SSLContext) -> asyncio.Server:
    def make() -> asyncio.Protocol:
        return TlsProtocol.server(lambda: context, Answer)

    return await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)


def failures(metrics: MeshMetrics) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == "tulle_upstream_tls_failures_total":
                found[sample.labels["reason"]] = sample.value
    return found


def test_the_response_carries_the_identity_the_upstream_proved(material: Material) -> None:
    async def scenario() -> None:
        server = await tls_upstream(material.server_context())
        port = server.sockets[0].getsockname()[1]
        mtls = MeshTls(keeper_with(material, material.frontend))
        pool = Http1Pool()
        pool.use_mtls(mtls)
        tls = UpstreamTls("outbound_.8080_._.backend", frozenset({BACKEND}), ())
        endpoint = EndpointSpec("127.0.0.1", port, tls=tls)
        plain_server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
        plain = EndpointSpec("127.0.0.1", plain_server.sockets[0].getsockname()[1])
        try:
            request = Request("GET", "/", "backend:8080", [("host", "backend:8080")])
            first = await pool.send(endpoint, ClusterSpec("backend"), request)
            again = await pool.send(endpoint, ClusterSpec("backend"), request)  # reused
            assert (first.status, first.upstream_principal) == (200, BACKEND)
            assert again.upstream_principal == BACKEND
            assert pool.opened == 1
            done = finished("outbound", request, again, 1.0, 1.001, 2)
            assert done.peer_principal == BACKEND
            # An endpoint outside the mesh: plain text, no principal.
            outside = await pool.send(plain, ClusterSpec("web"), request)
            assert (outside.status, outside.upstream_principal) == (200, None)
            assert finished("outbound", request, outside, 1.0, 1.001, 2).peer_principal == ""
        finally:
            pool.close()
            for each in (server, plain_server):
                each.close()
                await each.wait_closed()

    run(scenario())


def test_failed_mtls_connections_are_counted_by_cause(material: Material) -> None:
    async def scenario() -> None:
        metrics = MeshMetrics("frontend")
        mesh_server = await tls_upstream(material.server_context())
        foreign = await tls_upstream(material.server_context(material.foreign_ca))
        servers = (mesh_server, foreign)

        def endpoint(server: asyncio.Server, expected: str) -> EndpointSpec:
            tls = UpstreamTls("outbound_.8080_._.backend", frozenset({expected}), ())
            return EndpointSpec("127.0.0.1", server.sockets[0].getsockname()[1], tls=tls)

        async def attempt(keeper: CertificateKeeper, target: EndpointSpec) -> str:
            mtls = MeshTls(keeper)
            mtls.on_failure = metrics.upstream_tls_failed
            pool = Http1Pool()
            pool.use_mtls(mtls)
            request = Request("GET", "/", "backend:8080", [("host", "backend:8080")])
            try:
                with pytest.raises(UpstreamError) as failed:
                    await pool.send(target, ClusterSpec("backend"), request)
            finally:
                pool.close()
            return str(failed.value)

        ours = keeper_with(material, material.frontend)
        try:
            # The server is the mesh's backend, but the destination's accounts say payment.
            said = await attempt(ours, endpoint(mesh_server, spiffe("payment")))
            assert "upstream peer identity" in said
            # The server's certificate is from another CA.
            said = await attempt(ours, endpoint(foreign, BACKEND))
            assert said.startswith("mTLS: certificate verify failed")
            # This workload has no certificate: nothing is opened.
            said = await attempt(keeper_with(material, None), endpoint(mesh_server, BACKEND))
            assert said.startswith("no valid workload certificate")
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
        assert failures(metrics) == {
            "peer_identity": 1.0, "handshake_failed": 1.0, "no_certificate": 1.0,
        }  # fmt: skip

    run(scenario())
