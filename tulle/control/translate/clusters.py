"""Clusters: one per service port and per subset, discovered over EDS, with the DestinationRule's
load balancer, circuit breakers, outlier detection, connect timeout and client TLS (auto mTLS,
ISTIO_MUTUAL or DISABLE: :mod:`tulle.control.translate.tls`)."""

from __future__ import annotations

from typing import Any, Literal

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from google.protobuf import struct_pb2

from tulle.api.model import ConnectionPool, OutlierPolicy, Service, TrafficSettings, Workload
from tulle.api.model_locality import LocalityLbPolicy
from tulle.control.translate.cluster_options import (
    slow_start,
    tcp_keepalive,
    upgrades,
    upstream_protocol,
)
from tulle.control.translate.context import (
    NodeView,
    Snapshot,
    is_routable,
    own_workload,
    visible_services,
)
from tulle.control.translate.endpoints import Target, load_assignment, subset_members, targets
from tulle.control.translate.locality import locality_weighted, service_policy
from tulle.control.translate.names import cluster_name, inbound_cluster_name
from tulle.control.translate.protos import ads, duration, uint32
from tulle.control.translate.tls import ClientTls, secure_cluster
from tulle.xds.types import HTTP_PROTOCOL_OPTIONS

_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
    "RING_HASH": cluster_pb2.Cluster.RING_HASH,
}

# grpcio accepts only ROUND_ROBIN and RING_HASH in lb_policy (it NACKs LEAST_REQUEST and RANDOM:
# "LB policy is not supported"). Proxyless nodes get round robin for those (see docs).
_PROXYLESS_LB = {
    **_LB,
    "LEAST_REQUEST": cluster_pb2.Cluster.ROUND_ROBIN,
    "RANDOM": cluster_pb2.Cluster.ROUND_ROBIN,
}


def _thresholds(pool: ConnectionPool) -> Any:
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    limits = {
        "max_connections": pool.max_connections,
        "max_pending_requests": pool.max_pending_requests,
        "max_requests": pool.max_requests,
        "max_retries": pool.max_retries,
    }
    for field, value in limits.items():
        if value is not None:
            getattr(thresholds, field).CopyFrom(uint32(value))
    return thresholds


def _outlier(policy: OutlierPolicy) -> Any:
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=uint32(policy.consecutive_5xx_errors),
        enforcing_consecutive_5xx=uint32(100 if policy.consecutive_5xx_errors else 0),
        consecutive_gateway_failure=uint32(policy.consecutive_gateway_errors),
        enforcing_consecutive_gateway_failure=uint32(
            100 if policy.consecutive_gateway_errors else 0
        ),
        interval=duration(policy.interval),
        base_ejection_time=duration(policy.base_ejection_time),
        max_ejection_percent=uint32(policy.max_ejection_percent),
        enforcing_success_rate=uint32(0),
    )


def _metadata(service: Service, port: int, subset: str | None) -> Any:
    fields = struct_pb2.Struct()
    fields.update({"host": service.host, "port": port, "subset": subset or ""})
    return fields


def cluster(
    service: Service,
    port: int,
    subset: str | None,
    settings: TrafficSettings,
    view: NodeView,
    mesh_h2_upgrade: Literal["DO_NOT_UPGRADE", "UPGRADE"] = "DO_NOT_UPGRADE",
    mesh_locality: LocalityLbPolicy | None = None,
) -> Any:
    """The Cluster of ``service`` on ``port`` (and ``subset``). Its upstream protocol is
    Istio's: HTTP/2 for gRPC and HTTP2 ports, HTTP/1.1 for HTTP ones whatever the client spoke
    (HTTP/2 with an h2 upgrade: the rule's h2UpgradePolicy, else the Mesh's), the downstream
    protocol for ports that carry no HTTP."""
    name = cluster_name(service.host, port, subset)
    table = _PROXYLESS_LB if view.mode == "proxyless" else _LB
    balancer = settings.load_balancer
    result = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads(), service_name=name
        ),
        lb_policy=table[balancer.policy],
        connect_timeout=duration(settings.connection_pool.connect_timeout),
    )
    if balancer.policy == "RING_HASH" and balancer.minimum_ring_size:
        result.ring_hash_lb_config.minimum_ring_size.value = balancer.minimum_ring_size
    result.circuit_breakers.thresholds.append(_thresholds(settings.connection_pool))
    outlier = settings.outlier_detection
    if outlier is not None:
        result.outlier_detection.CopyFrom(_outlier(outlier))
        # Istio's: minHealthPercent is the panic threshold (0, its default, never panics).
        result.common_lb_config.healthy_panic_threshold.value = float(outlier.min_health_percent)
    policy, forced = service_policy(balancer.locality, service.traffic_distribution, mesh_locality)
    if balancer.zone_aware is not None or locality_weighted(policy, forced or outlier is not None):
        result.common_lb_config.locality_weighted_lb_config.SetInParent()
    pool = settings.connection_pool
    if pool.max_requests_per_connection:
        result.common_http_protocol_options.max_requests_per_connection.value = (
            pool.max_requests_per_connection
        )
    result.common_http_protocol_options.idle_timeout.CopyFrom(duration(pool.idle_timeout))
    slow_start(result, balancer)
    tcp_keepalive(result, pool)
    protocol = next((p.protocol for p in service.ports if p.number == port), "HTTP")
    h2 = upgrades(protocol, pool, mesh_h2_upgrade)
    result.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(
        upstream_protocol(protocol, h2, pool)
    )
    result.metadata.filter_metadata["tulle"].CopyFrom(_metadata(service, port, subset))
    return result


def inbound_clusters(workload: Workload) -> dict[str, Any]:
    """``inbound|<port>||``: the app beside a sidecar, on loopback (the proxy may be told another
    app port with ``--app-port``), spoken to in its port's protocol (so a request a caller
    upgraded to HTTP/2 reaches an HTTP/1.1 app in HTTP/1.1, as Istio's inbound clusters do)."""
    result = {}
    for port in workload.ports:
        name = inbound_cluster_name(port.port)
        result[name] = cluster_pb2.Cluster(
            name=name,
            type=cluster_pb2.Cluster.STATIC,
            connect_timeout=duration(10),
            load_assignment=load_assignment(
                name, [Target("127.0.0.1", port.port, {}, 1, "", True)]
            ),
        )
        result[name].typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(
            upstream_protocol(port.protocol, False, ConnectionPool())
        )
    return result


def clusters(snapshot: Snapshot, view: NodeView) -> dict[str, Any]:
    """Every outbound cluster for a node, and the inbound ones of its own workload."""
    result: dict[str, Any] = {}
    workload = own_workload(snapshot, view)
    if workload is not None:
        result.update(inbound_clusters(workload))
    for service in visible_services(snapshot, view):
        if not is_routable(service):
            continue
        policy = snapshot.model.destination_policy_for(service.host, view.namespace, view.labels)
        subsets = [None] + [s.name for s in policy.subsets] if policy else [None]
        shared = ClientTls.of(snapshot, service)
        mesh_h2 = snapshot.model.settings.h2_upgrade_policy
        mesh_locality = snapshot.model.settings.locality
        for port in service.ports:
            found = targets(snapshot, service, port)
            for subset in subsets:
                settings = policy.settings_for(subset, port.number) if policy else TrafficSettings()
                item = cluster(service, port.number, subset, settings, view, mesh_h2, mesh_locality)
                chosen = policy.subset(subset) if policy and subset else None
                members = subset_members(found, chosen.labels) if chosen else found
                secure_cluster(
                    item, view, service, port.number, subset, settings.tls_mode, members, shared
                )
                result[item.name] = item
    return result
