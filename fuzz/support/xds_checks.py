"""What a stock xDS client asks of the resources the translator makes, checked on one node's
resources: each is its type URL's message, named as it is keyed, serializes and parses back
the same (the wire form ADS sends) and converts to JSON; it keeps every protoc-gen-validate rule
of Envoy's protos (:mod:`fuzz.support.pgv`); it passes the checks grpcio applies (NOTES.md):
an HttpConnectionManager has HTTP filters with the router last, a route's match has its path
specifier, a virtual host has domains (each at most one wildcard, at an end; none twice in a
route configuration), a weighted split has weight, a locality has its weight; ring sizes and
outlier percentages are within grpcio's bounds; a proxyless cluster's mTLS is in the one form
grpcio reads (gRFC A29: see :func:`check_grpc_tls`); and what one resource names (a route
configuration, a cluster, an EDS service) is among the node's resources."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from fuzz.support import pgv
from fuzz.support.checks import calling, check, fail
from tulle.xds import types

MESSAGES: dict[str, Any] = {
    types.LISTENER: listener_pb2.Listener,
    types.ROUTE: route_pb2.RouteConfiguration,
    types.CLUSTER: cluster_pb2.Cluster,
    types.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = types.HCM_TYPE
TCP_PROXY = types.TCP_PROXY_TYPE
MAX_RING = 8 * 1024 * 1024  # grpcio's bound on ring hash sizes
GRPC_LB = (cluster_pb2.Cluster.ROUND_ROBIN, cluster_pb2.Cluster.RING_HASH)
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
GRPC_PROVIDER = "default"  # the certificate provider instance `tulle bootstrap grpc` writes
# CertificateValidationContext fields grpcio NACKs ("feature unsupported"): lists, messages.
GRPC_UNSUPPORTED_LISTS = ("verify_certificate_spki", "verify_certificate_hash")
GRPC_UNSUPPORTED_MESSAGES = ("crl", "custom_validator_config")

# Serialized resources already found to keep the rules: most of a mutated model translates as
# before, and the rules' walk is the costliest check. Cleared when it grows past its bound.
_KNOWN_GOOD: set[bytes] = set()
_KNOWN_GOOD_MAX = 50_000


def name_of(message: Any) -> str:
    """The name a resource is known by (a ClusterLoadAssignment's is its cluster's)."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return str(message.cluster_name)
    return str(message.name)


def check_resource(type_url: str, key: str, message: Any) -> Any:
    """One resource on its own; returns it as a client parses it from the wire."""
    cls = MESSAGES[type_url]
    check(isinstance(message, cls), "xds.type", f"{key}: {type(message).__name__} for {type_url}")
    check(name_of(message) == key, "xds.name", f"{name_of(message)!r} keyed as {key!r}")
    with calling("SerializeToString"):
        wire = message.SerializeToString(deterministic=True)
    again = cls.FromString(wire)
    check(again == message, "xds.round-trip", key)
    if wire in _KNOWN_GOOD:
        return again
    with calling("MessageToJson"):
        json_format.MessageToJson(again)
    broken = pgv.violations(again)
    check(not broken, "xds.validate-rules", lambda: f"{key}: {broken}")
    if len(_KNOWN_GOOD) > _KNOWN_GOOD_MAX:
        _KNOWN_GOOD.clear()
    _KNOWN_GOOD.add(wire)
    return again


def managers(listener: Any) -> Iterator[Any]:
    """The HttpConnectionManagers of a listener (its api_listener, its filter chains')."""
    if listener.HasField("api_listener"):
        inner = pgv.unpack(listener.api_listener.api_listener)
        check(inner is not None, "xds.api-listener", listener.name)
        yield inner
    for chain in listener.filter_chains:
        for item in chain.filters:
            if item.typed_config.type_url == HCM:
                yield pgv.unpack(item.typed_config)


def check_manager(manager: Any, where: str) -> None:
    """grpcio NACKs an HCM without HTTP filters or whose last is not the router."""
    filters = [f.typed_config.type_url for f in manager.http_filters]
    check(filters, "xds.hcm-filters", f"{where}: no HTTP filter")
    check(filters[-1:] == [ROUTER], "xds.hcm-router-last", f"{where}: {filters}")
    check(filters.count(ROUTER) == 1, "xds.hcm-router-last", f"{where}: {filters}")
    check(manager.WhichOneof("route_specifier"), "xds.hcm-routes", where)


def _domain_ok(domain: str) -> bool:
    """grpcio's domain patterns: exact, ``*``, or one wildcard at the start or the end."""
    if domain == "*" or "*" not in domain:
        return True
    return domain.count("*") == 1 and (domain.startswith("*") or domain.endswith("*"))


def check_routes(config: Any, clusters: Mapping[str, Any]) -> None:
    """What grpcio (and Envoy) ask of a RouteConfiguration, and that its clusters exist."""
    seen: set[str] = set()
    for host in config.virtual_hosts:
        check(host.domains, "xds.vhost-domains", f"{config.name}/{host.name}")
        for domain in host.domains:
            check(_domain_ok(domain), "xds.vhost-domain-pattern", f"{config.name}: {domain!r}")
            check(domain.lower() not in seen, "xds.vhost-domain-twice", f"{config.name}: {domain}")
            seen.add(domain.lower())
        for route in host.routes:
            where = f"{config.name}/{host.name}/{route.name}"
            check(route.match.WhichOneof("path_specifier"), "xds.route-path", where)
            if route.WhichOneof("action") != "route":
                continue
            action = route.route
            kind = action.WhichOneof("cluster_specifier")
            if kind == "cluster":
                check(action.cluster in clusters, "xds.route-cluster", f"{where}: {action.cluster}")
            elif kind == "weighted_clusters":
                weights = [c.weight.value for c in action.weighted_clusters.clusters]
                check(sum(weights) > 0, "xds.route-weights", f"{where}: {weights}")
                for item in action.weighted_clusters.clusters:
                    check(item.name in clusters, "xds.route-cluster", f"{where}: {item.name}")
            else:
                fail("xds.route-cluster", f"{where}: {kind}")


def check_cluster(cluster: Any, endpoints: Mapping[str, Any], proxyless: bool) -> None:
    """What grpcio asks of a Cluster, and that its endpoints are served."""
    if cluster.type == cluster_pb2.Cluster.EDS:
        service = cluster.eds_cluster_config.service_name or cluster.name
        check(service in endpoints, "xds.eds-service", f"{cluster.name}: {service}")
    if proxyless:
        check(cluster.lb_policy in GRPC_LB, "xds.grpc-lb-policy", f"{cluster.name}")
        check_grpc_tls(cluster)
    if cluster.HasField("load_assignment"):
        check_assignment(cluster.load_assignment)
    if cluster.HasField("ring_hash_lb_config"):
        ring = cluster.ring_hash_lb_config
        low = ring.minimum_ring_size.value if ring.HasField("minimum_ring_size") else 1024
        high = ring.maximum_ring_size.value if ring.HasField("maximum_ring_size") else MAX_RING
        check(1 <= low <= high <= MAX_RING, "xds.ring-size", f"{cluster.name}: {low}..{high}")
    if cluster.HasField("outlier_detection"):
        outlier = cluster.outlier_detection
        for field in ("max_ejection_percent", "enforcing_success_rate",
                      "enforcing_failure_percentage", "failure_percentage_threshold"):  # fmt: skip
            value = getattr(outlier, field)
            percent = value.value if outlier.HasField(field) else 0
            check(percent <= 100, "xds.outlier-percent", f"{cluster.name}: {field} {percent}")


def check_grpc_tls(cluster: Any) -> None:
    """A proxyless cluster's mTLS as grpcio reads it (xds_cluster_parser.cc,
    xds_common_types_parser.cc): grpcio ignores ``transport_socket_matches`` (mTLS would not
    happen) and typed SAN matchers (the server's identity would go unchecked); the one
    ``transport_socket`` is an UpstreamTlsContext whose certificate and CA come from the
    bootstrap's certificate provider instance (it NACKs SDS, ``tls_params``,
    ``custom_handshaker`` and the validation features it lacks), with the SAN matchers grpcio
    can build (no empty prefix, suffix or contains)."""
    name = cluster.name
    check(not cluster.transport_socket_matches, "xds.grpc-socket-matches", name)
    if not cluster.HasField("transport_socket"):
        return
    packed = cluster.transport_socket.typed_config
    check(packed.type_url == UPSTREAM_TLS, "xds.grpc-tls-type", f"{name}: {packed.type_url}")
    context = pgv.unpack(packed)
    assert context is not None
    common = context.common_tls_context
    unsupported = [
        field for field in ("tls_params", "custom_handshaker") if common.HasField(field)
    ] + [
        field
        for field in ("tls_certificate_sds_secret_configs", "tls_certificates")
        if getattr(common, field)
    ]
    check(not unsupported, "xds.grpc-tls-unsupported", f"{name}: {unsupported}")
    identity = common.tls_certificate_provider_instance
    check(
        identity.instance_name == GRPC_PROVIDER,
        "xds.grpc-tls-provider",
        f"{name}: identity from {identity.instance_name!r}",
    )
    kind = common.WhichOneof("validation_context_type")
    check(kind == "validation_context", "xds.grpc-tls-validation", f"{name}: {kind}")
    validation = common.validation_context
    ca = validation.ca_certificate_provider_instance
    check(ca.instance_name == GRPC_PROVIDER, "xds.grpc-tls-provider", f"{name}: CA from {ca}")
    check(
        not validation.match_typed_subject_alt_names,
        "xds.grpc-tls-typed-sans",
        f"{name}: grpcio reads only match_subject_alt_names",
    )
    bad = [f for f in GRPC_UNSUPPORTED_LISTS if getattr(validation, f)]
    bad += [f for f in GRPC_UNSUPPORTED_MESSAGES if validation.HasField(f)]
    if validation.require_signed_certificate_timestamp.value:
        bad.append("require_signed_certificate_timestamp")
    check(not bad, "xds.grpc-tls-unsupported", f"{name}: {bad}")
    for matcher in validation.match_subject_alt_names:
        pattern = matcher.WhichOneof("match_pattern")
        if pattern in ("prefix", "suffix", "contains"):
            value = getattr(matcher, pattern)
            check(value, "xds.grpc-tls-sans", f"{name}: empty {pattern}")
        else:
            check(pattern in ("exact", "safe_regex"), "xds.grpc-tls-sans", f"{name}: {pattern}")


def check_assignment(assignment: Any) -> None:
    """grpcio ignores a locality without a weight ("contains no localities")."""
    for group in assignment.endpoints:
        weighted = group.HasField("load_balancing_weight") and group.load_balancing_weight.value
        check(weighted, "xds.locality-weight", f"{assignment.cluster_name}: {group.locality}")


def check_node(resources: Mapping[str, Mapping[str, Any]], proxyless: bool) -> dict[str, Any]:
    """Every check, on one node's resources; returns them as parsed from the wire."""
    parsed: dict[str, dict[str, Any]] = {}
    for type_url, items in resources.items():
        check(type_url in MESSAGES, "xds.type", type_url)
        parsed[type_url] = {key: check_resource(type_url, key, m) for key, m in items.items()}
    routes, clusters = parsed[types.ROUTE], parsed[types.CLUSTER]
    for listener in parsed[types.LISTENER].values():
        for manager in managers(listener):
            check_manager(manager, listener.name)
            if manager.HasField("rds"):
                name = manager.rds.route_config_name
                check(name in routes, "xds.listener-routes", f"{listener.name}: {name}")
            else:
                check_routes(manager.route_config, clusters)
        for chain in listener.filter_chains:
            for item in chain.filters:
                if item.typed_config.type_url == TCP_PROXY:
                    proxy = pgv.unpack(item.typed_config)
                    assert proxy is not None
                    check(proxy.cluster in clusters, "xds.tcp-cluster", f"{listener.name}")
    for config in routes.values():
        check_routes(config, clusters)
    for cluster in clusters.values():
        check_cluster(cluster, parsed[types.ENDPOINT], proxyless)
    for assignment in parsed[types.ENDPOINT].values():
        check_assignment(assignment)
    return parsed
