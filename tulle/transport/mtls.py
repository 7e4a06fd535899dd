"""The workload's mTLS material as the data plane uses it: client contexts to originate mutual
TLS to an endpoint in the mesh, with the check of the identity the endpoint presents, and the
server context that terminates it. Built from the certificate the workload's
:class:`~tulle.security.renewal.CertificateKeeper` holds now, cached until it is renewed (a
renewal affects new connections only; open ones keep the certificate they began with).

Without a valid certificate nothing is made: a connection that needs mTLS fails closed with the
keeper's reason (``no valid workload certificate (expired ...)``), never in plain text."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Final, TypeVar

from tulle.engine.cluster_config import EndpointSpec, UpstreamTls
from tulle.engine.message import Request, UpstreamError
from tulle.obs.metrics import SOURCE_WORKLOAD_HEADER
from tulle.security.material import WorkloadCredentials
from tulle.security.renewal import CertificateKeeper
from tulle.security.verify import (
    PeerRefused,
    check_peer,
    peer_identity_from_der,
    peer_identity_from_getpeercert,
)
from tulle.transport.connect import open_upstream
from tulle.transport.tls_errors import PeerCert, TlsOrigin, VerifyPeer
from tulle.transport.tls_transport import keep_sni

INBOUND_ALPN: Final = ("h2", "http/1.1")

P = TypeVar("P", bound=asyncio.Protocol)


class PeerCheck:
    """A client's check of the server it reached: a SPIFFE id of the trust domain and, when
    the registry knows its destination's service accounts, one of them."""

    def __init__(self, trust_domain: str, allowed: frozenset[str]) -> None:
        self.trust_domain = trust_domain
        self.allowed = allowed or None

    def __call__(self, cert: PeerCert | None, der: bytes | None) -> None:
        # The context verified the peer (CERT_REQUIRED), so ssl's own dict carries its SANs: no
        # certificate parsing here. The DER is read only when the dict is empty.
        try:
            identity = peer_identity_from_getpeercert(cert) if cert else peer_identity_from_der(der)
            check_peer(identity, self.trust_domain, self.allowed)
        except PeerRefused as refused:
            raise ConnectionError(str(refused)) from None


class MeshTls:
    """Contexts for the data plane from the workload's current certificate."""

    def __init__(self, keeper: CertificateKeeper) -> None:
        self.keeper = keeper
        self._serial = -1
        self._clients: dict[tuple[str, ...], ssl.SSLContext] = {}
        self._server: ssl.SSLContext | None = None
        self._identity_of: WorkloadCredentials | None = None  # the credentials _identity is of
        self._identity = ""
        # Told the UpstreamError message of each outbound connection to an endpoint in the
        # mesh that failed (the metrics count the TLS ones by cause).
        self.on_failure: Callable[[str], None] | None = None

    def _credentials(self) -> WorkloadCredentials:
        """The valid credentials; UpstreamError (connect) saying why there are none."""
        problem = self.keeper.problem()
        current = self.keeper.current
        if problem is not None or current is None:
            raise UpstreamError("connect", problem or "no valid workload certificate")
        if current.serial != self._serial:
            self._serial = current.serial
            self._clients.clear()
            self._server = None
        return current

    def client(self, tls: UpstreamTls) -> tuple[ssl.SSLContext, VerifyPeer]:
        """The context and the peer check for a connection to an endpoint in the mesh."""
        credentials = self._credentials()
        context = self._clients.get(tls.alpn)
        if context is None:
            context = credentials.client_context()
            if tls.alpn:
                context.set_alpn_protocols(list(tls.alpn))
            self._clients[tls.alpn] = context
        return context, PeerCheck(credentials.identity.trust_domain, tls.expected_identities)

    def server(self) -> ssl.SSLContext:
        """The context inbound TLS connections are terminated with: a client certificate is
        required under STRICT and PERMISSIVE alike (PERMISSIVE takes plain text beside TLS, which
        is decided before any TLS: :class:`~tulle.transport.tls_open.TlsOrPlain`). No session
        tickets: mesh clients never resume, and each ticket a client keeps costs it about 13 KiB
        per connection."""
        credentials = self._credentials()
        if self._server is None:
            self._server = credentials.server_context(require_client_cert=True)
            self._server.set_alpn_protocols(list(INBOUND_ALPN))
            self._server.num_tickets = 0
            self._server.sni_callback = keep_sni
        return self._server

    def certificate(self) -> tuple[str, float] | None:
        """This workload's SPIFFE id and its certificate's not-after (POSIX seconds), for the
        metrics; None before the first certificate."""
        current = self.keeper.current
        if current is None:
            return None
        return current.identity.uri, current.not_after.timestamp()

    @property
    def identity(self) -> str | None:
        """This workload's SPIFFE id, when it has a certificate. Read for every request served
        (``X-Forwarded-Client-Cert``): kept per certificate, not formatted each time."""
        current = self.keeper.current
        if current is None:
            return None
        if current is not self._identity_of:
            self._identity_of = current
            self._identity = current.identity.uri
        return self._identity


def tls_origin(mtls: MeshTls | None, endpoint: EndpointSpec) -> TlsOrigin | None:
    """How to reach ``endpoint``: None for plain text (an endpoint outside the mesh, or a
    workload that has no identity to speak mTLS with), else mTLS with the current certificate;
    UpstreamError (connect) when the workload's certificate is not valid now."""
    if endpoint.tls is None or mtls is None:
        return None
    context, verify = mtls.client(endpoint.tls)
    return context, verify, endpoint.tls.sni


async def open_mesh_upstream(
    factory: Callable[[], P],
    endpoint: EndpointSpec,
    timeout: float,
    mark: int | None,
    mtls: MeshTls | None,
) -> P:
    """:func:`~tulle.transport.connect.open_upstream` to ``endpoint``: over mTLS when it is in
    the mesh and this workload has an identity, else plain text. A failure of an mTLS
    connection is told to ``mtls.on_failure`` (the metrics count it) before it is raised."""
    if mtls is None or endpoint.tls is None:
        return await open_upstream(factory, endpoint.address, endpoint.port, timeout, mark)
    try:
        origin = tls_origin(mtls, endpoint)
        return await open_upstream(factory, endpoint.address, endpoint.port, timeout, mark, origin)
    except UpstreamError as error:
        if mtls.on_failure is not None:
            mtls.on_failure(str(error))
        raise


def peer_principal(transport: object) -> str | None:
    """The SPIFFE id a connection's peer proved in its TLS handshake (None: plain text, or
    no URI SAN)."""
    get = getattr(transport, "get_extra_info", None)
    cert = get("peercert") if get is not None else None
    if not cert:
        return None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and value.startswith("spiffe://"):
            return str(value)
    return None


def connection_facts(
    transport: asyncio.BaseTransport, destination: tuple[str, int] | None
) -> tuple[str, str]:
    """What authorization reads of a connection besides its peer: the address it came to
    (its original destination when intercepted, else the socket's own address) and the SNI
    its TLS client sent ("" over plain text or without one). Read once per connection."""
    if destination is not None:
        local = destination[0]
    else:
        own = transport.get_extra_info("sockname")
        local = str(own[0]) if isinstance(own, tuple) and own else ""
    return local, transport.get_extra_info("sni") or ""


XFCC: Final = "x-forwarded-client-cert"
_DROPPED_OVER_MTLS: Final = (XFCC, SOURCE_WORKLOAD_HEADER)


def forward_client_cert(request: Request, own: str | None) -> None:
    """What the app sees of its caller, as Envoy sets it (``forward_client_cert_details:
    SANITIZE_SET``): a client's own ``X-Forwarded-Client-Cert`` is dropped, and over mTLS the
    header says who this workload is (``By``) and whom it verified (``URI``). Over mTLS the
    ``x-tulle-source-workload`` header is dropped too: the certificate says who called, and a
    header the caller wrote must not reach the app as if it did."""
    headers = request.headers
    principal = request.peer_principal
    if principal is None:
        if any(name == XFCC for name, _ in headers):
            headers[:] = [(name, value) for name, value in headers if name != XFCC]
        return
    for name, _ in headers:  # rare: rebuilt only when there is one to drop
        if name in _DROPPED_OVER_MTLS:
            headers[:] = [(n, v) for n, v in headers if n not in _DROPPED_OVER_MTLS]
            break
    value = f"By={own};URI={principal}" if own else f"URI={principal}"
    headers.append((XFCC, value))
