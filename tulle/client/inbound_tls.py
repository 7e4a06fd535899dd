"""Library mode's inbound mTLS, shared by the uvicorn protocol (:mod:`tulle.client.uvicorn`) and
the WSGI server (:mod:`tulle.client.wsgi_server`): the PeerAuthentication mode of the app's port
(as the sidecar's inbound listener judges a connection), the server context made from the
workload's current certificate (rebuilt when it is renewed: new connections get the new one, open
ones keep theirs), the check of the caller's identity, and what a refusal does (counted in
``tulle_inbound_tls_refused_total{reason}``, logged with the peer and the reason).

The caller's SPIFFE id reaches the middleware under :data:`PEER_PRINCIPAL`: in the ASGI scope's
``state`` (uvicorn copies a connection's state into each request's scope), in the WSGI environ.
A client cannot set either (headers become ``HTTP_*`` keys, never state), and the key's presence
says the connection came through Tulle's server (None: plain text)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from tulle.engine.inbound import InboundPolicy
from tulle.security.material import WorkloadCredentials
from tulle.security.verify import PeerCertDict, check_peer, peer_identity_from_getpeercert
from tulle.transport.tls_open import MtlsMode
from tulle.transport.tls_transport import keep_sni

if TYPE_CHECKING:
    from tulle.client.runtime import MeshRuntime

log = logging.getLogger("tulle.client")

PEER_PRINCIPAL = "tulle.peer_principal"
"""Scope-state / environ key: the caller's SPIFFE id (None over plain text)."""
CONNECTION = "tulle.connection"
"""Scope-state / environ key: ``(local_ip, sni, peer_ip)`` of the connection (the address it
came to, the server name its TLS client sent, its peer's address), for authorization's
``destination.ip``, ``connection.sni`` and ``ipBlocks``: the peer the socket has, never one a
server took from X-Forwarded-For (uvicorn's ``proxy_headers`` rewrites the scope's ``client``
for callers on 127.0.0.1); absent when the server is not Tulle's."""
ALPN = ("http/1.1",)
"""What the library's mTLS side offers: its servers (uvicorn's protocols, wsgiref) speak
HTTP/1.1 only, so a client offering ``h2`` first still gets HTTP/1.1."""
NO_IDENTITY = (
    "STRICT mTLS, but this app has no workload identity (TULLE_XDS_ROOT_CERT, TULLE_TOKEN_FILE)"
)
NOT_TERMINATED = (
    "plain text refused: STRICT mTLS (this app's server does not terminate mTLS: serve it with "
    "tulle.client.uvicorn or tulle.client.wsgi_server)"
)
FIRST_BYTES_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0


def port_policy(
    policies: Mapping[int, InboundPolicy], port: int
) -> tuple[int, InboundPolicy | None]:
    """The app port and its policy for a request to ``port``; a workload with one port has that
    port's policy whatever port the app listens on (local mode gives it a free one)."""
    policy = policies.get(port)
    if policy is None and len(policies) == 1:
        port, policy = next(iter(policies.items()))
    return port, policy


class InboundTls:
    """The runtime's inbound mTLS: one per :class:`~tulle.client.runtime.MeshRuntime`."""

    def __init__(self, runtime: MeshRuntime) -> None:
        self.runtime = runtime
        self._cached: tuple[WorkloadCredentials, ssl.SSLContext] | None = None

    def mode(self, port: int) -> MtlsMode:
        """The mode of app port ``port``. A port the config has no policy for (none has come
        yet) is PERMISSIVE, the mesh's default; without a workload identity the app can only
        take plain text, so PERMISSIVE becomes DISABLE (and STRICT refuses everything)."""
        _, policy = port_policy(self.runtime.inbound, port)
        mode = policy.mode if policy is not None else "PERMISSIVE"
        if mode == "PERMISSIVE" and self.runtime.certificates is None:
            return "DISABLE"
        return cast(MtlsMode, mode)

    @property
    def has_identity(self) -> bool:
        """Whether the app gets a certificate (it runs with the secure xDS port and a token)."""
        return self.runtime.certificates is not None

    def context(self) -> ssl.SSLContext:
        """The server context of the current certificate: a client certificate is required
        and must verify against the trust bundle. ValueError with the keeper's reason when
        there is no valid certificate (the handshake is refused: fail closed)."""
        keeper = self.runtime.certificates
        if keeper is None:
            raise ValueError("no workload identity")
        problem = keeper.problem()
        current = keeper.current
        if problem is not None or current is None:
            raise ValueError(problem or "no valid workload certificate")
        cached = self._cached
        if cached is not None and cached[0] is current:
            return cached[1]
        context = current.server_context(require_client_cert=True)
        context.set_alpn_protocols(list(ALPN))
        context.num_tickets = 0  # mesh clients never resume
        context.sni_callback = keep_sni
        self._cached = (current, context)
        return context

    def principal(self, cert: PeerCertDict | None) -> str:
        """The caller's SPIFFE id from its verified certificate (``getpeercert()``); PeerRefused
        when it has none, or one outside this mesh's trust domain."""
        identity = peer_identity_from_getpeercert(cert)
        keeper = self.runtime.certificates
        current = keeper.current if keeper is not None else None
        if current is not None:
            check_peer(identity, current.identity.trust_domain, None)
        return identity.uri

    @property
    def own_identity(self) -> str | None:
        """This workload's SPIFFE id (the ``By`` of X-Forwarded-Client-Cert)."""
        keeper = self.runtime.certificates
        current = keeper.current if keeper is not None else None
        return current.identity.uri if current is not None else None

    def refused(self, peer: Any, reason: str) -> None:
        """A connection (or, on a server that does not terminate mTLS, a request) refused:
        counted by cause and logged with the peer's address."""
        self.runtime.metrics.tls_refused(reason)
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else peer
        log.warning("inbound connection from %s refused: %s", address, reason)


def client_cert_header(principal: str | None, own: str | None) -> str | None:
    """X-Forwarded-Client-Cert as the sidecar sets it (Envoy's SANITIZE_SET): ``By=<own
    id>;URI=<caller's id>`` over mTLS, nothing over plain text."""
    if principal is None:
        return None
    return f"By={own};URI={principal}" if own else f"URI={principal}"
