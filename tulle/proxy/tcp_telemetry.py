"""What the sidecar records of its TCP connections: the ``tulle_tcp_*`` metrics, with the
identity labels resolved once per connection, and one access-log entry per connection when it
ends, including the ones that never reached the app or the upstream: refused by the port's mTLS
mode (plain text under STRICT, a failed handshake), by its AuthorizationPolicy (network RBAC),
or whose upstream could not be opened (refused, timed out, its mTLS handshake or identity
refused, no valid workload certificate; ``UF``/``UT`` with the reason, as a request's)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.errors import no_healthy_endpoint, upstream_failure
from tulle.engine.message import UpstreamError
from tulle.obs.access_log import AccessLog
from tulle.obs.connection import TcpConnection
from tulle.obs.metrics import MeshMetrics
from tulle.transport.mtls import peer_principal
from tulle.transport.tls_open import PLAIN_REFUSED


def _address(peer: Any) -> str:
    """The IP of a ``peername`` (empty when there is none), as a request's ``source``."""
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def refusal_flag(reason: str) -> str:
    """The flag of a connection the inbound mTLS gate refused: ``NR`` when no filter chain could
    take it (plain text under STRICT, or this sidecar has no certificate: Envoy's "no matching
    filter chain"), ``DPE`` when the caller's TLS failed (its handshake or its certificate)."""
    no_chain = "no workload identity" in reason or "no TLS context" in reason
    return "NR" if no_chain or reason.startswith(PLAIN_REFUSED) else "DPE"


class TcpTelemetry:
    """Metrics and access-log entries of one sidecar's TCP connections."""

    def __init__(self, metrics: MeshMetrics, log: AccessLog) -> None:
        self.metrics = metrics
        self.log = log

    def begin(
        self,
        listener: str,
        downstream: asyncio.BaseTransport,
        endpoint: EndpointSpec,
        service: str,
        cluster: str,
    ) -> TcpConnection:
        """A pipe starts: inbound, the caller's identity is known already (its handshake is
        done), so the connection's label set is resolved now; outbound, once the upstream's
        handshake is (:meth:`connected`)."""
        connection = TcpConnection(
            listener, time.time(), _address(downstream.get_extra_info("peername")), service,
            cluster, endpoint.key, endpoint.workload,
        )  # fmt: skip
        if listener == "inbound":
            connection.peer_principal = peer_principal(downstream) or ""
            self.metrics.tcp_open(connection)
        return connection

    def connected(self, connection: TcpConnection, upstream: asyncio.BaseTransport) -> None:
        """An outbound pipe's upstream is open: the identity it proved (none in plain text)."""
        if connection.series is None:
            connection.peer_principal = peer_principal(upstream) or ""
            self.metrics.tcp_open(connection)

    def ended(
        self,
        connection: TcpConnection,
        received: int,
        sent: int,
        failure: UpstreamError | None,
    ) -> None:
        """The pipe closed (``received`` bytes read from the downstream, ``sent`` written to
        it); ``failure``: why its upstream could not be opened."""
        connection.ended = time.time()
        connection.received, connection.sent = received, sent
        if failure is not None:
            error = upstream_failure(f"{failure.kind} {failure}", connection.upstream,
                                     connection.service)  # fmt: skip
            connection.flag, connection.reason = error.flag, error.reason
        self.metrics.tcp_close(connection)
        self.log.record_tcp(connection)

    def no_endpoint(self, downstream: asyncio.BaseTransport, service: str, cluster: str) -> None:
        """An outbound connection to a mesh TCP service with no endpoint to take it (``UH``)."""
        error = no_healthy_endpoint(cluster)
        peer = downstream.get_extra_info("peername")
        self.refused("outbound", peer, error.flag, error.reason, service, cluster)

    def refused(
        self,
        listener: str,
        peer: Any,
        flag: str,
        reason: str,
        service: str = "",
        cluster: str = "",
        principal: str = "",
    ) -> None:
        """A connection closed before any byte went on (the caller says why it was)."""
        connection = TcpConnection(
            listener, time.time(), _address(peer), service, cluster, "", "", principal
        )
        connection.flag, connection.reason = flag, reason
        self.log.record_tcp(connection)

    def gate_refused(self, peer: Any, reason: str) -> None:
        """An inbound connection the mTLS gate refused (plain text under STRICT, a failed
        handshake): the refusal is counted by the metrics' ``tls_refused``; this is its entry."""
        self.refused("inbound", peer, refusal_flag(reason), reason)
