"""The mesh model's destination policies (DestinationRules): load balancing, connection
pools, outlier detection and TLS mode, layered per rule, subset and port as Istio does."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from tulle.api.model_base import UNLIMITED, Pairs, ResourceRef
from tulle.api.model_locality import LocalityLbPolicy, ZoneAwarePolicy


@dataclass(frozen=True)
class LoadBalancer:
    """The algorithm, and for ``RING_HASH`` what it hashes on."""

    policy: Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH"] = "LEAST_REQUEST"
    hash_on: Literal["header", "cookie", "source_ip", "query_parameter"] | None = None
    hash_key: str | None = None
    cookie_path: str | None = None
    cookie_ttl: float | None = None
    minimum_ring_size: int | None = None
    warmup: Warmup | None = None  # slow start (ROUND_ROBIN and LEAST_REQUEST only)
    # localityLbSetting; None: not set (Istio's mesh default applies: on, no rules)
    locality: LocalityLbPolicy | None = None
    # zoneAwareLbSetting with enabled: true (None: not set, or not enabled)
    zone_aware: ZoneAwarePolicy | None = None


@dataclass(frozen=True)
class Warmup:
    """Slow start: a new endpoint's weight ramps up over ``duration`` seconds from
    ``minimum_percent`` of it (Istio's defaults: 10%, aggression 1.0, a linear ramp)."""

    duration: float
    minimum_percent: float = 10.0
    aggression: float = 1.0


@dataclass(frozen=True)
class TcpKeepalive:
    """SO_KEEPALIVE with these overrides of the OS defaults (None: the OS's), in seconds."""

    time: int | None = None
    interval: int | None = None
    probes: int | None = None


@dataclass(frozen=True)
class Http2Keepalive:
    """HTTP/2 PINGs every ``interval`` seconds; no ACK within ``timeout``: connection closed."""

    interval: float
    timeout: float


@dataclass(frozen=True)
class ConnectionPool:
    """Circuit-breaker limits per destination (None: unlimited) and connection settings."""

    max_connections: int | None = UNLIMITED
    connect_timeout: float = 10.0
    max_pending_requests: int | None = UNLIMITED
    max_requests: int | None = UNLIMITED
    max_requests_per_connection: int | None = UNLIMITED
    max_retries: int | None = UNLIMITED
    idle_timeout: float = 3600.0
    tcp_keepalive: TcpKeepalive | None = None
    # HTTP/1.1 requests go upstream over HTTP/2 (UPGRADE), never (DO_NOT_UPGRADE), or as the
    # Mesh's h2UpgradePolicy says (None: Istio's DEFAULT).
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] | None = None
    http2_keepalive: Http2Keepalive | None = None


@dataclass(frozen=True)
class OutlierPolicy:
    """Outlier detection with Istio's defaults for fields left out."""

    consecutive_5xx_errors: int = 5
    consecutive_gateway_errors: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0


@dataclass(frozen=True)
class TrafficSettings:
    """The effective policy for traffic to one destination (service, subset, port)."""

    load_balancer: LoadBalancer = field(default_factory=LoadBalancer)
    connection_pool: ConnectionPool = field(default_factory=ConnectionPool)
    outlier_detection: OutlierPolicy | None = None
    tls_mode: Literal["ISTIO_MUTUAL", "DISABLE"] | None = None


@dataclass(frozen=True)
class PolicyLayer:
    """The fields one level of a DestinationRule sets (None: inherited from the level above)."""

    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierPolicy | None = None
    tls_mode: Literal["ISTIO_MUTUAL", "DISABLE"] | None = None
    ports: tuple[tuple[int, PolicyLayer], ...] = ()

    def apply(self, settings: TrafficSettings, port: int | None) -> TrafficSettings:
        """``settings`` with this layer's fields, then this layer's settings for ``port``."""
        for name in ("load_balancer", "connection_pool", "outlier_detection", "tls_mode"):
            value = getattr(self, name)
            if value is not None:
                settings = replace(settings, **{name: value})
        for number, layer in self.ports:
            if number == port:
                settings = layer.apply(settings, None)
        return settings


@dataclass(frozen=True)
class Subset:
    """A named subset: the endpoints whose labels include ``labels``."""

    name: str
    labels: Pairs
    policy: PolicyLayer = field(default_factory=PolicyLayer)


@dataclass(frozen=True)
class DestinationPolicy:
    """A DestinationRule for one host."""

    host: str
    origin: ResourceRef
    policy: PolicyLayer = field(default_factory=PolicyLayer)
    subsets: tuple[Subset, ...] = ()
    # ``workloadSelector``: the client workloads of the rule's namespace it applies to (their
    # labels include these); None: every client that sees the rule.
    workload_selector: Pairs | None = None

    def selects(self, namespace: str, labels: Pairs) -> bool:
        """Whether a rule with a workload selector applies to a client in ``namespace`` with
        ``labels``: only in the rule's own namespace (Istio's selectors never cross one)."""
        if self.workload_selector is None:
            return False
        return namespace == self.origin.namespace and set(self.workload_selector) <= set(labels)

    def subset(self, name: str) -> Subset | None:
        """The subset called ``name``."""
        return next((s for s in self.subsets if s.name == name), None)

    def settings_for(self, subset: str | None = None, port: int | None = None) -> TrafficSettings:
        """Effective settings, as Istio layers them: rule, rule's port, subset, subset's port."""
        settings = self.policy.apply(TrafficSettings(), port)
        chosen = self.subset(subset) if subset else None
        if chosen is not None:
            settings = chosen.policy.apply(settings, port)
        return settings
