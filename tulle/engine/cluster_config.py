"""Clusters and their endpoints, compiled from CDS and EDS resources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from tulle.engine.config import seconds
from tulle.engine.connection_options import (
    PingSpec,
    SlowStartSpec,
    TcpKeepaliveSpec,
    pings_of,
    slow_start_of,
    tcp_keepalive_of,
)
from tulle.engine.matching import ConfigError
from tulle.xds.types import HTTP_PROTOCOL_OPTIONS

TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"
_LB_NAMES = {0: "ROUND_ROBIN", 1: "LEAST_REQUEST", 2: "RING_HASH", 3: "RANDOM"}


@dataclass(frozen=True)
class Limits:
    """Circuit-breaker thresholds; None is unlimited (Istio's default)."""

    max_connections: int | None = None
    max_pending: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None


@dataclass(frozen=True)
class OutlierSpec:
    """Outlier detection settings of a cluster."""

    consecutive_5xx: int = 5
    consecutive_gateway: int = 0
    interval: float = 10.0
    base_ejection: float = 30.0
    max_ejection_percent: int = 10
    # The panic threshold (Envoy's healthy_panic_threshold; Istio sends minHealthPercent):
    # below this percent of available endpoints, a priority ignores ejections. 0: never.
    min_health_percent: float = 0.0


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster: how to balance, limit and watch its endpoints."""

    name: str
    lb: str = "ROUND_ROBIN"
    ring_size: int = 1024
    limits: Limits = Limits()
    outlier: OutlierSpec | None = None
    connect_timeout: float = 10.0
    max_requests_per_connection: int | None = None
    idle_timeout: float = 3600.0
    static_endpoints: tuple[EndpointSpec, ...] | None = None
    # The upstream protocol: HTTP/2 (True), HTTP/1.1 (False), or the client's (None).
    http2: bool | None = None
    slow_start: SlowStartSpec | None = None  # a joining endpoint's weight ramps up
    tcp_keepalive: TcpKeepaliveSpec | None = None  # SO_KEEPALIVE on its connections
    pings: PingSpec | None = None  # HTTP/2 PINGs on its HTTP/2 connections
    # Pick a locality by weight within a priority first (Envoy's locality_weighted_lb_config).
    locality_weighted: bool = False

    def upstream_http2(self, request_http2: bool) -> bool:
        """Whether a request that came in over HTTP/2 (``request_http2``) or HTTP/1.1 goes out
        over HTTP/2."""
        return request_http2 if self.http2 is None else self.http2


@dataclass(frozen=True)
class UpstreamTls:
    """How to reach an endpoint over mTLS: the SNI to send, the SPIFFE ids (URIs) the server
    may present (empty: any identity the trust bundle verifies), and the ALPN to offer."""

    sni: str
    expected_identities: frozenset[str]
    alpn: tuple[str, ...]


@dataclass(frozen=True)
class EndpointSpec:
    """An endpoint of a cluster. ``tls``: None for plain text, else how to speak mTLS to it,
    decided once per config from its cluster's transport sockets and ``socket_match`` (its
    ``envoy.transport_socket_match`` metadata, ``(("tlsMode", "istio"),)`` in the mesh)."""

    address: str
    port: int
    weight: int = 1
    healthy: bool = True
    locality: str = ""
    workload: str = ""
    socket_match: tuple[tuple[str, str], ...] = ()
    tls: UpstreamTls | None = None
    priority: int = 0  # its locality group's EDS priority (0 first)
    locality_weight: int = 1  # its locality group's load_balancing_weight (0: none given)
    key: str = field(init=False, repr=False, compare=False)  # ``address:port``
    # What a pooled connection to it was opened with: ``key``, and the TLS it speaks, so a
    # connection made in plain text is never reused where the config now asks for mTLS.
    pool_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = f"{self.address}:{self.port}" if self.port else self.address  # 0: a Unix socket
        object.__setattr__(self, "key", key)
        tls = self.tls
        if tls is not None:
            identities = ",".join(sorted(tls.expected_identities))
            key = f"{key}|mtls|{tls.sni}|{identities}|{','.join(tls.alpn)}"
        object.__setattr__(self, "pool_key", key)


def _value(wrapper: Any, holder: Any, name: str) -> int | None:
    return int(wrapper.value) if holder.HasField(name) else None


def _upstream_http2(cluster: Any) -> tuple[bool | None, PingSpec | None]:
    """The cluster's HttpProtocolOptions: explicit HTTP/2 or HTTP/1.1, else the client's; and
    the HTTP/2 options' PINGs."""
    packed = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS)
    if packed is None:
        return None, None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if not packed.Unpack(options):
        raise ConfigError(
            f"cluster {cluster.name!r}: {HTTP_PROTOCOL_OPTIONS} holds {packed.type_url}"
        )
    chosen_options = options.WhichOneof("upstream_protocol_options")
    if chosen_options == "use_downstream_protocol_config":
        return None, pings_of(options.use_downstream_protocol_config.http2_protocol_options)
    if chosen_options != "explicit_http_config":
        return None, None
    chosen: str | None = options.explicit_http_config.WhichOneof("protocol_config")
    if chosen != "http2_protocol_options":
        return False, None
    return True, pings_of(options.explicit_http_config.http2_protocol_options)


def compile_cluster(cluster: Any) -> ClusterSpec:
    """An Envoy Cluster as a ClusterSpec."""
    lb = _LB_NAMES.get(cluster.lb_policy)
    if lb is None:
        raise ConfigError(f"cluster {cluster.name!r}: unsupported lb_policy {cluster.lb_policy}")
    limits = Limits()
    if cluster.circuit_breakers.thresholds:
        t = cluster.circuit_breakers.thresholds[0]
        limits = Limits(
            _value(t.max_connections, t, "max_connections"),
            _value(t.max_pending_requests, t, "max_pending_requests"),
            _value(t.max_requests, t, "max_requests"),
            _value(t.max_retries, t, "max_retries"),
        )
    outlier = None
    common = cluster.common_lb_config
    if cluster.HasField("outlier_detection"):
        o = cluster.outlier_detection
        outlier = OutlierSpec(
            consecutive_5xx=o.consecutive_5xx.value if o.HasField("consecutive_5xx") else 5,
            consecutive_gateway=(
                o.consecutive_gateway_failure.value
                if o.HasField("consecutive_gateway_failure")
                and o.enforcing_consecutive_gateway_failure.value
                else 0
            ),
            interval=seconds(o.interval) if o.HasField("interval") else 10.0,
            base_ejection=seconds(o.base_ejection_time)
            if o.HasField("base_ejection_time")
            else 30.0,
            max_ejection_percent=o.max_ejection_percent.value
            if o.HasField("max_ejection_percent")
            else 10,
            # Envoy's default panic threshold is 50%; Istio always sends minHealthPercent.
            min_health_percent=(
                common.healthy_panic_threshold.value
                if common.HasField("healthy_panic_threshold")
                else 50.0
            ),
        )
    options = cluster.common_http_protocol_options
    http2, pings = _upstream_http2(cluster)
    static = None
    if cluster.HasField("load_assignment"):
        static = compile_endpoints(cluster.load_assignment)
    return ClusterSpec(
        name=cluster.name,
        lb=lb,
        ring_size=(
            cluster.ring_hash_lb_config.minimum_ring_size.value
            if cluster.ring_hash_lb_config.HasField("minimum_ring_size")
            else 1024
        ),
        limits=limits,
        outlier=outlier,
        connect_timeout=seconds(cluster.connect_timeout)
        if cluster.HasField("connect_timeout")
        else 10.0,
        max_requests_per_connection=(
            options.max_requests_per_connection.value
            if options.HasField("max_requests_per_connection")
            else None
        ),
        idle_timeout=seconds(options.idle_timeout) if options.HasField("idle_timeout") else 3600.0,
        static_endpoints=static,
        http2=http2,
        slow_start=slow_start_of(cluster),
        tcp_keepalive=tcp_keepalive_of(cluster),
        pings=pings,
        locality_weighted=common.HasField("locality_weighted_lb_config"),
    )


def _workload(lb_endpoint: Any) -> str:
    fields = lb_endpoint.metadata.filter_metadata.get("tulle")
    if fields is None or "workload" not in fields.fields:
        return ""
    return str(fields.fields["workload"].string_value)


def _socket_match(lb_endpoint: Any) -> tuple[tuple[str, str], ...]:
    """The endpoint's ``envoy.transport_socket_match`` metadata (string values) as pairs."""
    fields = lb_endpoint.metadata.filter_metadata.get(TRANSPORT_SOCKET_MATCH)
    if fields is None:
        return ()
    return tuple(sorted((k, str(v.string_value)) for k, v in fields.fields.items()))


def _host_port(address: Any) -> tuple[str, int]:
    """An endpoint's address and port; a pipe (a Unix socket) as ``unix:///path`` and 0."""
    if address.HasField("pipe"):
        return f"unix://{address.pipe.path}", 0
    return address.socket_address.address, address.socket_address.port_value


def compile_endpoints(assignment: Any) -> tuple[EndpointSpec, ...]:
    """A ClusterLoadAssignment's endpoints (unhealthy ones kept, marked)."""
    result = []
    for group in assignment.endpoints:
        locality = "/".join(
            part
            for part in (group.locality.region, group.locality.zone, group.locality.sub_zone)
            if part
        )
        # A locality without a weight is left out when balancing by locality weight (Envoy).
        locality_weight = (
            group.load_balancing_weight.value if group.HasField("load_balancing_weight") else 0
        )
        for lb_endpoint in group.lb_endpoints:
            host, port = _host_port(lb_endpoint.endpoint.address)
            weight = (
                lb_endpoint.load_balancing_weight.value
                if lb_endpoint.HasField("load_balancing_weight")
                else 1
            )
            result.append(
                EndpointSpec(
                    address=host,
                    port=port,
                    weight=max(1, weight),
                    healthy=lb_endpoint.health_status in (0, 1),  # UNKNOWN or HEALTHY
                    locality=locality,
                    workload=_workload(lb_endpoint),
                    socket_match=_socket_match(lb_endpoint),
                    priority=group.priority,
                    locality_weight=locality_weight,
                )
            )
    return tuple(result)
