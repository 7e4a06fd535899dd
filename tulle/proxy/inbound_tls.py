"""The sidecar's inbound side of mTLS: each connection to the inbound listener is judged by the
PeerAuthentication mode of the app port it is for (its original destination with interception,
else the app's port): STRICT takes only mutual TLS, PERMISSIVE tells TLS from plain text on the
first byte and takes both, DISABLE takes plain text. A refusal closes the connection, is counted
(``tulle_inbound_tls_refused_total{reason}``) and logged with the peer and the reason; the
connection that passes goes on to the listener's usual protocol, inside the TLS layer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from tulle.engine.inbound import InboundPolicy
from tulle.transport.interception import original_destination
from tulle.transport.mtls import MeshTls
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
