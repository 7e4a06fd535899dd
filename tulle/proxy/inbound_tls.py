"""The sidecar's inbound side of mTLS: each connection to the inbound listener is judged by the
PeerAuthentication mode of the app port it is for (its original destination with interception,
else the app's port): STRICT takes only mutual TLS, PERMISSIVE tells TLS from plain text on the
first byte and takes both, DISABLE takes plain text. A refusal closes the connection, is counted
(``tulle_inbound_tls_refused_total{reason}``) and logged with the peer and the reason; the
connection that passes goes on to the listener's usual protocol, inside the TLS layer. There, an
opaque TCP port's AuthorizationPolicy (network RBAC) judges the connection once
(:func:`tcp_admitted`), on the identity the handshake proved, before a byte reaches the app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from tulle.engine.inbound import InboundPolicy, connection_refusal
from tulle.proxy.tcp_telemetry import TcpTelemetry
from tulle.transport.interception import original_destination
from tulle.transport.mtls import MeshTls, peer_principal
from tulle.transport.tls_open import MtlsMode, TlsOrPlain

log = logging.getLogger(__name__)


class InboundGate(asyncio.Protocol):
    """Picks the mode at connection time, then hands the connection to :class:`TlsOrPlain`."""

    def __init__(
        self,
        policies: Callable[[], Mapping[int, InboundPolicy]],
        port_of: Callable[[tuple[str, int] | None], int],
        mtls: MeshTls | None,
        inner: Callable[[], asyncio.Protocol],
        refused: Callable[[Any, str], None],
    ) -> None:
        self.policies = policies
        self.port_of = port_of
        self.mtls = mtls
        self.inner = inner
        self.refused = refused

    def mode_for(self, port: int) -> str:
        """The port's mode; without an identity this sidecar can only take plain text, so a
        STRICT port then refuses every connection (fails closed) and the others take plain."""
        policy = self.policies().get(port)
        mode = policy.mode if policy is not None else "DISABLE"
        if self.mtls is None and mode == "PERMISSIVE":
            return "DISABLE"
        return mode

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        port = self.port_of(original_destination(transport.get_extra_info("socket")))
        mode = self.mode_for(port)
        mtls = self.mtls
        if mode == "STRICT" and mtls is None:
            peer = transport.get_extra_info("peername")
            self.refused(peer, "STRICT mTLS, but this sidecar has no workload identity")
            transport.close()
            return
        provider = None if mtls is None else mtls.server
        gate = TlsOrPlain(cast(MtlsMode, mode), provider, self.inner, on_refused=self.refused)
        transport.set_protocol(gate)
        gate.connection_made(transport)


def tcp_admitted(
    policy: InboundPolicy | None,
    port: int,
    transport: asyncio.BaseTransport,
    destination: tuple[str, int] | None,
    telemetry: TcpTelemetry,
) -> bool:
    """Whether the port's network RBAC admits this connection (ports without any: yes): its
    peer's address and the SPIFFE id its mTLS handshake proved (none over plain text). A
    refusal is counted (``tulle_inbound_tcp_denied_total{destination_service, policy}``),
    logged with the peer, its identity and the reason, and has an access-log entry (flag
    ``RBAC``, the reason naming the policy); the caller closes the connection."""
    if policy is None or not policy.connection_rbac:
        return True
    peer = transport.get_extra_info("peername")
    source = str(peer[0]) if isinstance(peer, tuple) and peer else ""
    principal = peer_principal(transport)
    local = destination[0] if destination is not None else ""
    denial = connection_refusal(policy, port, source, principal, local)
    if denial is None:
        return True
    name, reason = denial
    telemetry.metrics.tcp_denied(policy.service, name)
    telemetry.refused("inbound", peer, "RBAC", reason, policy.service, f"inbound|{port}||",
                      principal or "")  # fmt: skip
    address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else peer
    who = principal or "no mTLS identity"
    log.warning(
        "inbound TCP connection from %s (%s) to port %d refused: %s", address, who, port, reason
    )
    return False
