"""What the sidecar's transparent listeners make of a connection: the inbound listener's mTLS
gate (as the port's PeerAuthentication says) and network RBAC, and on each listener the plan
for the destination port (HTTP through the front ends, opaque TCP, passthrough or refusal)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.connection_options import TcpKeepaliveSpec
from tulle.proxy.detecting import DetectingFront
from tulle.proxy.dispatch import PASSTHROUGH
from tulle.proxy.h2_front import H2Front
from tulle.proxy.http_front import Http1Front
from tulle.proxy.inbound_tls import InboundGate, tcp_admitted
from tulle.proxy.recording import Destination
from tulle.proxy.transparent import Plan, TransparentOutbound
from tulle.proxy.tunnels import Tunnels

log = logging.getLogger(__name__)


class Listeners(Tunnels):
    """The transparent inbound and outbound listeners' protocol factories and plans."""

    def _inbound_connection(self) -> InboundGate:
        """A connection to the inbound listener: mTLS as the port's PeerAuthentication says,
        then the usual inbound protocol."""
        return InboundGate(
            lambda: self.inbound,
            self._inbound_port,
            self.mtls,
            self._transparent_inbound,
            self._inbound_refused,
        )

    def _inbound_refused(self, peer: Any, reason: str) -> None:
        self.metrics.tls_refused(reason)
        self.tcp.gate_refused(peer, reason)
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else peer
        log.warning("inbound connection from %s refused: %s", address, reason)

    def _transparent_inbound(self) -> TransparentOutbound:
        def http() -> DetectingFront:
            return DetectingFront(
                lambda: Http1Front(
                    "inbound",
                    self.dispatch_inbound,
                    self.inbound_recorder,
                    self.in_flight,
                    True,
                    self.inbound_tunnel,
                    self.limits,
                ),
                lambda dst: H2Front(
                    "inbound",
                    self.dispatch_inbound,
                    self.inbound_recorder,
                    self.in_flight,
                    dst,
                    self.limits,
                ),
                self.in_flight,
                transparent=True,
                header_timeout=self.limits.header_timeout,
            )

        return TransparentOutbound(
            self.inbound_plan,
            http,
            self.pool.mark,
            self.in_flight,
            self.tcp,
            admit=self.admit_inbound,
            listener="inbound",
        )

    def admit_inbound(self, transport: asyncio.Transport, destination: Destination) -> bool:
        """The port's network RBAC (AuthorizationPolicy on an opaque TCP port), once per
        connection (see :func:`tcp_admitted`)."""
        port = self._inbound_port(destination)
        return tcp_admitted(self.inbound.get(port), port, transport, destination, self.tcp)

    def inbound_plan(self, destination: tuple[str, int] | None) -> Plan:
        """HTTP for the app's HTTP ports (policy enforced), opaque TCP for its TCP ports."""
        port = destination[1] if destination else next(iter(self.inbound), self.app_port or 0)
        policy = self.inbound.get(port)
        if policy is not None and policy.tcp:
            endpoint = EndpointSpec("127.0.0.1", self.app_port or port)
            return ("tcp", endpoint, policy.service, f"inbound|{port}||")
        return ("http", None, "", "")

    def _transparent_outbound(self) -> TransparentOutbound:
        tunnel = self.tunneler(lambda destination: str(destination[1]) if destination else "")

        def http() -> DetectingFront:
            return DetectingFront(
                lambda: Http1Front(
                    "outbound",
                    self.dispatch_outbound,
                    self.outbound_recorder,
                    self.in_flight,
                    True,
                    tunnel,
                    self.limits,
                ),
                lambda dst: H2Front(
                    "outbound",
                    self.dispatch_outbound,
                    self.outbound_recorder,
                    self.in_flight,
                    dst,
                    self.limits,
                ),
                self.in_flight,
                transparent=True,
                header_timeout=self.limits.header_timeout,
            )

        return TransparentOutbound(
            self.outbound_plan, http, self.pool.mark, self.in_flight, self.tcp, self.mtls,
            keepalive=self._tcp_keepalive,
        )  # fmt: skip

    def _tcp_keepalive(self, cluster: str) -> TcpKeepaliveSpec | None:
        """A TCP cluster's tcpKeepalive, for its pipes' upstream sockets."""
        state = self.engine.clusters.get(cluster)
        return state.spec.tcp_keepalive if state is not None else None

    def outbound_plan(self, destination: tuple[str, int] | None) -> Plan:
        """HTTP when the mesh routes the destination port; else TCP to the mesh's TCP service on
        that port (mutual TLS to an endpoint in the mesh: its ``tls``), or through to the
        original destination in plain text."""
        if destination is None:
            return ("refuse", None, "", "")
        port = destination[1]
        if str(port) in self.engine.config.route_tables:
            return ("http", None, "", "")
        cluster = self.tcp_clusters.get(port)
        if cluster is not None:
            state = self.engine.clusters.get(cluster)
            endpoint = state.pick(None, self.engine.clock()) if state else None
            service = cluster.rsplit("|", 1)[-1]
            if endpoint is None:
                return ("refuse", None, service, cluster)
            return ("tcp", endpoint, service, cluster)
        return ("tcp", EndpointSpec(*destination), PASSTHROUGH, PASSTHROUGH)
