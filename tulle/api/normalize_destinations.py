"""Normalization of Istio DestinationRules: load balancing, connection pools, outlier
detection and TLS mode, per host, subset and port, as
:class:`~tulle.api.model.DestinationPolicy`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Literal

from tulle.api.kinds import DestinationRule
from tulle.api.kinds import networking as net
from tulle.api.kinds.destination_pool import keepalive_seconds
from tulle.api.model import (
    ConnectionPool,
    DestinationPolicy,
    LoadBalancer,
    OutlierPolicy,
    PolicyLayer,
    ScopedPolicy,
    Subset,
)
from tulle.api.model_destinations import Http2Keepalive, TcpKeepalive, Warmup
from tulle.api.normalize_common import HostResolver, export_namespaces, pairs, ref, seconds
from tulle.api.normalize_locality import with_locality

# --- DestinationRule ------------------------------------------------------------------------


def _warmup(settings: net.LoadBalancerSettings) -> Warmup | None:
    """``warmup``, else the older ``warmupDurationSecs`` (Istio reads them in that order)."""
    if settings.warmup is not None:
        given = settings.warmup
        defaults = Warmup(0.0)
        return Warmup(
            duration=seconds(given.duration) or 0.0,
            minimum_percent=(
                given.minimum_percent
                if given.minimum_percent is not None
                else defaults.minimum_percent
            ),
            aggression=given.aggression if given.aggression is not None else defaults.aggression,
        )
    if settings.warmup_duration_secs is not None:
        return Warmup(duration=seconds(settings.warmup_duration_secs) or 0.0)
    return None


def _load_balancer(settings: net.LoadBalancerSettings | None) -> LoadBalancer | None:
    if settings is None:
        return None
    if settings.consistent_hash is None:
        simple = settings.simple or "LEAST_REQUEST"  # Istio's default algorithm
        policy = "LEAST_REQUEST" if simple == "LEAST_CONN" else simple
        # Slow start is Envoy's (and Istio's) for round robin and least request only.
        warmup = _warmup(settings) if policy != "RANDOM" else None
        return LoadBalancer(policy=policy, warmup=warmup)
    hashing = settings.consistent_hash
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


_H2_UPGRADE: dict[str, Literal["DO_NOT_UPGRADE", "UPGRADE"]] = {
    "DO_NOT_UPGRADE": "DO_NOT_UPGRADE",
    "UPGRADE": "UPGRADE",
}  # DEFAULT: the Mesh's h2UpgradePolicy


def _connection_pool(settings: net.ConnectionPoolSettings | None) -> ConnectionPool | None:
    if settings is None:
        return None
    tcp = settings.tcp or net.TCPSettings()
    http = settings.http or net.HTTPSettings()
    defaults = ConnectionPool()
    keepalive = tcp.tcp_keepalive
    pings = http.http2_keep_alive
    upgrade = http.h2_upgrade_policy
    return ConnectionPool(
        max_connections=tcp.max_connections,
        connect_timeout=seconds(tcp.connect_timeout) or defaults.connect_timeout,
        max_pending_requests=http.http1_max_pending_requests,
        max_requests=http.http2_max_requests,
        max_requests_per_connection=http.max_requests_per_connection or None,
        max_retries=http.max_retries,
        idle_timeout=seconds(http.idle_timeout) or defaults.idle_timeout,
        tcp_keepalive=(
            TcpKeepalive(
                time=keepalive_seconds(keepalive.time) if keepalive.time else None,
                interval=keepalive_seconds(keepalive.interval) if keepalive.interval else None,
                probes=keepalive.probes,
            )
            if keepalive is not None
            else None
        ),
        h2_upgrade_policy=_H2_UPGRADE.get(upgrade or "DEFAULT"),
        http2_keepalive=(
            Http2Keepalive(seconds(pings.interval) or 0.0, seconds(pings.timeout) or 0.0)
            if pings is not None
            else None
        ),
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
        load_balancer=with_locality(_load_balancer(policy.load_balancer), policy.load_balancer),
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
        workload_selector=(
            pairs(rule.spec.workload_selector.match_labels)
            if rule.spec.workload_selector is not None
            else None
        ),
    )


def merged_policy(
    first: DestinationPolicy, later: DestinationPolicy, first_sets_policy: bool
) -> DestinationPolicy:
    """Two DestinationRules of one host and scope as Istio's ``mergeDestinationRule`` merges
    them: ``later``'s subsets are added unless ``first`` has one of that name, and ``later``'s
    top-level traffic policy applies only if no rule merged into ``first`` wrote one (Istio
    tests the field's presence: an empty ``trafficPolicy: {}`` counts)."""
    names = {subset.name for subset in first.subsets}
    added = tuple(subset for subset in later.subsets if subset.name not in names)
    policy = first.policy if first_sets_policy else later.policy
    return replace(first, subsets=first.subsets + added, policy=policy)


def destination_policies(
    rules: Iterable[DestinationRule], resolve: HostResolver
) -> tuple[
    dict[str, DestinationPolicy], dict[str, list[ScopedPolicy]], dict[str, list[DestinationPolicy]]
]:
    """The DestinationRules by host: those every namespace sees (merged per host), those an
    exportTo restricts (merged per host and namespace), and those with a workloadSelector."""
    policies: dict[str, DestinationPolicy] = {}
    scoped_policies: dict[str, list[ScopedPolicy]] = {}
    selected_policies: dict[str, list[DestinationPolicy]] = {}
    sets_policy: set[tuple[str, str]] = set()  # (host, scope) whose merged rules wrote one
    for rule in rules:
        policy = destination_policy(rule, resolve)
        if policy.workload_selector is not None:  # its namespace's selected clients only
            selected_policies.setdefault(policy.host, []).append(policy)
            continue
        seen_in = export_namespaces(rule.spec.export_to, rule.namespace)
        key = (policy.host, "*" if seen_in is None else rule.namespace)
        first_sets_policy = key in sets_policy
        if rule.spec.traffic_policy is not None:
            sets_policy.add(key)
        if seen_in is None:
            earlier = policies.get(policy.host)
            policies[policy.host] = (
                policy if earlier is None else merged_policy(earlier, policy, first_sets_policy)
            )
            continue
        scoped = scoped_policies.setdefault(policy.host, [])
        same = next((i for i, s in enumerate(scoped) if s.namespace == rule.namespace), None)
        if same is None:
            scoped.append(ScopedPolicy(rule.namespace, seen_in, policy))
        else:  # merged into the first of its namespace, whose exportTo stands (as in Istio)
            first = scoped[same]
            merged = merged_policy(first.policy, policy, first_sets_policy)
            scoped[same] = replace(first, policy=merged)
    return policies, scoped_policies, selected_policies
