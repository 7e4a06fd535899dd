"""mTLS in xDS, in the shapes Istio generates: the client side of a cluster (auto mTLS through
``transport_socket_matches``, or one ``transport_socket`` when a DestinationRule says
ISTIO_MUTUAL) and the server side of an inbound filter chain (a DownstreamTlsContext).

Sidecars and the library take their certificate and trust bundle as SDS secrets over ADS
(``default`` and ``ROOTCA``, as Envoy under Istio names them). Stock grpcio reads neither SDS nor
``transport_socket_matches`` (gRFC A29): a proxyless node gets one ``transport_socket`` naming
the certificate provider instances of its bootstrap (``default``; the bundle as ``ROOTCA``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from tulle.api.model import Service
from tulle.control.translate.context import NodeView, Snapshot
from tulle.control.translate.endpoints import Target
from tulle.control.translate.names import sni_name
from tulle.control.translate.peer_authn import service_mode
from tulle.control.translate.protos import ads, pack

TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_SOCKET = "envoy.transport_sockets.raw_buffer"
IDENTITY_SECRET = "default"
"""The SDS secret (and grpcio certificate provider instance) holding the workload's own chain."""
ROOT_SECRET = "ROOTCA"
"""The SDS secret (and the certificate name in grpcio's provider) holding the trust bundle."""
PROVIDER_INSTANCE = "default"
"""The ``certificate_providers`` entry of a gRPC bootstrap that holds the workload's files."""
MESH_ALPN = ("istio-peer-exchange", "istio")
"""What a mesh client offers first: Istio's in-mesh ALPN (with metadata exchange)."""
SERVER_ALPN = ("h2", "http/1.1")
"""What an inbound mTLS chain offers (Istio's downstream ALPN)."""
_HTTP2_PROTOCOLS = frozenset({"GRPC", "GRPC-WEB", "HTTP2"})


def spiffe_uri(trust_domain: str, namespace: str, service_account: str) -> str:
    """``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def service_identities(snapshot: Snapshot, service: Service) -> tuple[str, ...]:
    """The SPIFFE ids a client accepts from ``service``'s endpoints: the service accounts the
    registry knows for them (and those ServiceEntry endpoints name) and a ServiceEntry's
    ``subjectAltNames`` that are SPIFFE ids (what a workload certificate carries), sorted, as
    Istio adds them to the service's accounts."""
    domain = snapshot.model.settings.trust_domain
    found = {
        spiffe_uri(domain, e.namespace, e.service_account)
        for e in snapshot.endpoints_by_service.get(service.host, ())
    }
    found.update(
        spiffe_uri(domain, service.namespace, e.service_account)
        for e in service.endpoints
        if e.service_account
    )
    found.update(name for name in service.subject_alt_names if name.startswith("spiffe://"))
    return tuple(sorted(found))


def _sds(name: str) -> Any:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads())


def _uri_matchers(identities: Iterable[str]) -> list[Any]:
    return [
        common_pb2.SubjectAltNameMatcher(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(exact=uri),
        )
        for uri in identities
    ]


def client_alpn(protocol: str) -> tuple[str, ...]:
    """A mesh client's ALPN for a port of ``protocol``: Istio's in-mesh names, then ``h2`` for
    HTTP/2 and gRPC ports, ``http/1.1`` for HTTP ones, nothing more for TCP."""
    if protocol in _HTTP2_PROTOCOLS:
        return (*MESH_ALPN, "h2")
    if protocol == "HTTP":
        return (*MESH_ALPN, "http/1.1")
    return MESH_ALPN


def upstream_context(identities: Iterable[str], sni: str, alpn: Iterable[str]) -> Any:
    """A sidecar's or the library's UpstreamTlsContext: its certificate and the bundle by SDS,
    the server's SPIFFE id one of ``identities``."""
    common = tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_sds(IDENTITY_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=_uri_matchers(identities)
            ),
            validation_context_sds_secret_config=_sds(ROOT_SECRET),
        ),
        alpn_protocols=list(alpn),
    )
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)


def proxyless_context(identities: Iterable[str]) -> Any:
    """A grpcio client's UpstreamTlsContext (gRFC A29): certificate provider instances from its
    bootstrap, the server's SPIFFE id one of ``identities`` (``match_subject_alt_names``, which
    grpcio matches against every SAN of the server's certificate)."""
    common = tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
            instance_name=PROVIDER_INSTANCE, certificate_name=IDENTITY_SECRET
        ),
        validation_context=common_pb2.CertificateValidationContext(
            ca_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
                instance_name=PROVIDER_INSTANCE, certificate_name=ROOT_SECRET
            ),
            match_subject_alt_names=[string_pb2.StringMatcher(exact=uri) for uri in identities],
        ),
    )
    return tls_pb2.UpstreamTlsContext(common_tls_context=common)


def downstream_context() -> Any:
    """An inbound mTLS chain's DownstreamTlsContext: the workload's certificate by SDS, a client
    certificate required and verified against the bundle (the trust domain is checked by the
    data plane, as Istio leaves it to the bundle)."""
    common = tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_sds(IDENTITY_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(),
            validation_context_sds_secret_config=_sds(ROOT_SECRET),
        ),
        alpn_protocols=list(SERVER_ALPN),
    )
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    context.require_client_certificate.value = True
    return context


def transport_socket(context: Any) -> Any:
    """``envoy.transport_sockets.tls`` with ``context``."""
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def raw_buffer() -> Any:
    """``envoy.transport_sockets.raw_buffer``: plain text."""
    return base_pb2.TransportSocket(name=RAW_SOCKET, typed_config=pack(raw_buffer_pb2.RawBuffer()))


@dataclass(frozen=True)
class ClientTls:
    """What every cluster of one service shares: the SPIFFE ids its endpoints may present, and
    whether auto mTLS applies to it (a service in the mesh whose namespace, or the mesh, does
    not DISABLE mTLS)."""

    identities: tuple[str, ...]
    auto: bool

    @classmethod
    def of(cls, snapshot: Snapshot, service: Service) -> ClientTls:
        """The ClientTls of ``service``."""
        auto = service.location != "MESH_EXTERNAL" and (
            service_mode(snapshot.model, service.namespace) != "DISABLE"
        )
        return cls(service_identities(snapshot, service), auto)


def secure_cluster(
    cluster: Any,
    view: NodeView,
    service: Service,
    port: int,
    subset: str | None,
    tls_mode: str | None,
    members: list[Target],
    shared: ClientTls,
) -> None:
    """Give ``cluster`` (of ``service``'s ``port`` and ``subset``, with the DestinationRule's
    ``tls_mode``, whose endpoints are ``members``; ``shared``: the service's ClientTls) its
    client-side TLS:

    - DISABLE: none (plain text);
    - ISTIO_MUTUAL: one ``transport_socket`` for every endpoint;
    - not set (auto mTLS), sidecar and library: ``tlsMode-istio`` (endpoints labelled in the
      mesh) speaks mTLS, ``tlsMode-disabled`` (the rest) plain text;
    - not set, proxyless: one ``transport_socket`` when every endpoint is in the mesh, else none.

    Auto mTLS leaves external services and namespaces whose PeerAuthentication DISABLEs alone.
    """
    if tls_mode == "DISABLE" or (tls_mode is None and not shared.auto):
        return
    identities = shared.identities
    if view.mode == "proxyless":
        if tls_mode is None and not (members and all(t.in_mesh for t in members)):
            return
        cluster.transport_socket.CopyFrom(transport_socket(proxyless_context(identities)))
        return
    protocol = next((p.protocol for p in service.ports if p.number == port), "HTTP")
    context = upstream_context(
        identities, sni_name(service.host, port, subset), client_alpn(protocol)
    )
    if tls_mode == "ISTIO_MUTUAL":
        cluster.transport_socket.CopyFrom(transport_socket(context))
        return
    in_mesh = cluster_pb2.Cluster.TransportSocketMatch(
        name="tlsMode-istio", transport_socket=transport_socket(context)
    )
    in_mesh.match.update({"tlsMode": "istio"})
    plain = cluster_pb2.Cluster.TransportSocketMatch(
        name="tlsMode-disabled", transport_socket=raw_buffer()
    )
    plain.match.SetInParent()
    cluster.transport_socket_matches.extend([in_mesh, plain])
