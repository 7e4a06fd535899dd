"""mTLS config compiled from xDS, once per update: what the pools need to reach each endpoint
(:class:`~tulle.engine.cluster_config.UpstreamTls` or None) and what each inbound port accepts
(STRICT, PERMISSIVE, DISABLE). Protos are read here only; the fronts and pools read the result.

Client side, Envoy's rules: a cluster's ``transport_socket_matches`` are tried in order against
an endpoint's ``envoy.transport_socket_match`` metadata (every key of ``match`` must be there
with the same value; an empty ``match`` takes any endpoint); none matching, the cluster's
``transport_socket`` applies; none set, plain text. Contexts whose certificate comes by SDS and
those that name certificate provider instances (the proxyless form) both compile: the
workload's own certificate and bundle are the data plane's, whatever the names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from tulle.engine.cluster_config import EndpointSpec, UpstreamTls
from tulle.engine.matching import ConfigError

UPSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)
DOWNSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
RAW_BUFFER_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
_URI = common_pb2.SubjectAltNameMatcher.URI


@dataclass(frozen=True)
class SocketChoice:
    """A cluster's transport sockets: ``(match, tls)`` tried in order, then the default."""

    matches: tuple[tuple[tuple[tuple[str, str], ...], UpstreamTls | None], ...] = ()
    default: UpstreamTls | None = None

    def for_endpoint(self, socket_match: tuple[tuple[str, str], ...]) -> UpstreamTls | None:
        """The TLS of an endpoint whose transport socket metadata is ``socket_match``."""
        have = set(socket_match)
        for wanted, tls in self.matches:
            if have.issuperset(wanted):
                return tls
        return self.default


PLAIN = SocketChoice()


def _exact_uris(validation: Any) -> frozenset[str]:
    """The SPIFFE ids a validation context accepts: exact URI SAN matchers (typed or not)."""
    found = set()
    for typed in validation.match_typed_subject_alt_names:
        kind = typed.matcher.WhichOneof("match_pattern")
        if typed.san_type != _URI or kind != "exact":
            raise ConfigError(
                "only exact URI subject alt name matchers (SPIFFE ids) are supported, "
                f"got {common_pb2.SubjectAltNameMatcher.SanType.Name(typed.san_type)} {kind}"
            )
        found.add(typed.matcher.exact)
    for matcher in validation.match_subject_alt_names:
        kind = matcher.WhichOneof("match_pattern")
        if kind != "exact":
            raise ConfigError(f"only exact subject alt name matchers are supported, got {kind}")
        found.add(matcher.exact)
    return frozenset(found)


def _validation(common: Any) -> Any:
    kind = common.WhichOneof("validation_context_type")
    if kind == "combined_validation_context":
        return common.combined_validation_context.default_validation_context
    if kind == "validation_context":
        return common.validation_context
    if kind is None:
        raise ConfigError("an mTLS context needs a validation context (the trust bundle)")
    raise ConfigError(f"validation context {kind!r} is not supported")


def _has_certificate(common: Any) -> bool:
    return bool(
        common.tls_certificate_sds_secret_configs
        or common.HasField("tls_certificate_provider_instance")
        or common.HasField("tls_certificate_certificate_provider_instance")
    )


def upstream_tls(socket: Any) -> UpstreamTls | None:
    """A cluster's TransportSocket: None for raw_buffer, an UpstreamTls for mutual TLS."""
    packed = socket.typed_config
    if packed.type_url == RAW_BUFFER_TYPE:
        return None
    if packed.type_url != UPSTREAM_TLS_TYPE:
        raise ConfigError(f"transport socket {socket.name!r}: {packed.type_url} is not supported")
    context = tls_pb2.UpstreamTlsContext()
    packed.Unpack(context)
    common = context.common_tls_context
    if not _has_certificate(common):
        raise ConfigError(
            f"transport socket {socket.name!r}: no client certificate (only mutual TLS is "
            "supported)"
        )
    identities = _exact_uris(_validation(common))
    return UpstreamTls(context.sni, identities, tuple(common.alpn_protocols))


def _pairs(match: Any) -> tuple[tuple[str, str], ...]:
    pairs = []
    for key, value in match.fields.items():
        if value.WhichOneof("kind") != "string_value":
            raise ConfigError(f"transport socket match {key!r}: only string values are supported")
        pairs.append((key, str(value.string_value)))
    return tuple(sorted(pairs))


def socket_choice(cluster: Any) -> SocketChoice:
    """A Cluster's ``transport_socket_matches`` and ``transport_socket``."""
    matches = tuple(
        (_pairs(item.match), upstream_tls(item.transport_socket))
        for item in cluster.transport_socket_matches
    )
    default = (
        upstream_tls(cluster.transport_socket) if cluster.HasField("transport_socket") else None
    )
    if not matches and default is None:
        return PLAIN
    return SocketChoice(matches, default)


def with_tls(endpoints: tuple[EndpointSpec, ...], choice: SocketChoice) -> tuple[EndpointSpec, ...]:
    """``endpoints`` with their ``tls`` decided by ``choice``."""
    if choice is PLAIN:
        return endpoints
    return tuple(replace(e, tls=choice.for_endpoint(e.socket_match)) for e in endpoints)


def inbound_alpn(socket: Any) -> tuple[str, ...]:
    """An inbound mTLS chain's DownstreamTlsContext: the ALPN it offers. It must require a
    client certificate (the mesh's inbound TLS is mutual)."""
    packed = socket.typed_config
    if packed.type_url != DOWNSTREAM_TLS_TYPE:
        raise ConfigError(f"inbound transport socket {socket.name!r}: {packed.type_url}")
    context = tls_pb2.DownstreamTlsContext()
    packed.Unpack(context)
    if not context.require_client_certificate.value:
        raise ConfigError("an inbound TLS chain must require a client certificate (mutual TLS)")
    if not _has_certificate(context.common_tls_context):
        raise ConfigError("an inbound TLS chain has no server certificate")
    return tuple(context.common_tls_context.alpn_protocols)


def inbound_mode(transports: Mapping[str, bool]) -> str:
    """A port's mode from the transports its chains accept (``tls``, ``raw_buffer``; a chain
    without ``transport_protocol`` accepts plain text): STRICT, PERMISSIVE or DISABLE."""
    if transports.get("tls"):
        return "PERMISSIVE" if transports.get("raw_buffer") else "STRICT"
    return "DISABLE"
