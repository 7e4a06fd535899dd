"""Normalization of Istio DestinationRules: load balancing, connection pools, outlier
detection and TLS mode, per host, subset and port, as
:class:`~tulle.api.model.DestinationPolicy`."""

from __future__ import annotations

from tulle.api.kinds import DestinationRule
from tulle.api.kinds import networking as net
from tulle.api.model import (
    ConnectionPool,
    DestinationPolicy,
    LoadBalancer,
    OutlierPolicy,
    PolicyLayer,
    Subset,
)
from tulle.api.normalize_common import HostResolver, pairs, ref, seconds

# --- DestinationRule ------------------------------------------------------------------------


def _load_balancer(settings: net.LoadBalancerSettings | None) -> LoadBalancer | None:
    if settings is None:
        return None
    if settings.simple is not None:
        policy = "LEAST_REQUEST" if settings.simple == "LEAST_CONN" else settings.simple
        return LoadBalancer(policy=policy)
    hashing = settings.consistent_hash
    assert hashing is not None
    if hashing.http_header_name is not None:
        on, key = "header", hashing.http_header_name.lower()
    elif hashing.http_cookie is not None:
        on, key = "cookie", hashing.http_cookie.name
    elif hashing.http_query_parameter_name is not None:
        on, key = "query_parameter", hashing.http_query_parameter_name
    else:
        on, key = "source_ip", None
    cookie = hashing.http_cookie
    return LoadBalancer(
        policy="RING_HASH",
        hash_on=on,  # type: ignore[arg-type]
        hash_key=key,
        cookie_path=cookie.path if cookie else None,
        cookie_ttl=seconds(cookie.ttl) if cookie else None,
        minimum_ring_size=hashing.minimum_ring_size,
    )


def _connection_pool(settings: net.ConnectionPoolSettings | None) -> ConnectionPool | None:
    if settings is None:
        return None
    tcp = settings.tcp or net.TCPSettings()
    http = settings.http or net.HTTPSettings()
    defaults = ConnectionPool()
    return ConnectionPool(
        max_connections=tcp.max_connections,
        connect_timeout=seconds(tcp.connect_timeout) or defaults.connect_timeout,
        max_pending_requests=http.http1_max_pending_requests,
        max_requests=http.http2_max_requests,
        max_requests_per_connection=http.max_requests_per_connection or None,
        max_retries=http.max_retries,
        idle_timeout=seconds(http.idle_timeout) or defaults.idle_timeout,
    )


def _outlier(settings: net.OutlierDetection | None) -> OutlierPolicy | None:
    if settings is None:
        return None
    defaults = OutlierPolicy()
    return OutlierPolicy(
        consecutive_5xx_errors=(
            settings.consecutive_5xx_errors
            if settings.consecutive_5xx_errors is not None
            else defaults.consecutive_5xx_errors
        ),
        consecutive_gateway_errors=settings.consecutive_gateway_errors or 0,
        interval=seconds(settings.interval) or defaults.interval,
        base_ejection_time=seconds(settings.base_ejection_time) or defaults.base_ejection_time,
        max_ejection_percent=(
            settings.max_ejection_percent
            if settings.max_ejection_percent is not None
            else defaults.max_ejection_percent
        ),
        min_health_percent=settings.min_health_percent or 0,
    )


def _layer(policy: net.TrafficPolicy | net.PortTrafficPolicy | None) -> PolicyLayer:
    if policy is None:
        return PolicyLayer()
    ports: tuple[tuple[int, PolicyLayer], ...] = ()
    if isinstance(policy, net.TrafficPolicy):
        ports = tuple((p.port.number, _layer(p)) for p in policy.port_level_settings)
    return PolicyLayer(
        load_balancer=_load_balancer(policy.load_balancer),
        connection_pool=_connection_pool(policy.connection_pool),
        outlier_detection=_outlier(policy.outlier_detection),
        tls_mode=policy.tls.mode if policy.tls else None,
        ports=ports,
    )


def destination_policy(rule: DestinationRule, resolve: HostResolver) -> DestinationPolicy:
    """The policy of a DestinationRule for its (resolved) host, with its subsets."""
    return DestinationPolicy(
        host=resolve(rule.spec.host, rule.namespace),
        origin=ref(rule),
        policy=_layer(rule.spec.traffic_policy),
        subsets=tuple(
            Subset(s.name, pairs(s.labels), _layer(s.traffic_policy)) for s in rule.spec.subsets
        ),
    )
