"""The mesh model: every resource normalized into one immutable value that later parts consume.

VirtualService and HTTPRoute both become :class:`HttpRoute` lists per host; DestinationRules become
:class:`DestinationPolicy` with Istio's defaults filled in; hosts are fully qualified; durations
are seconds (floats); percentages are floats from 0 to 100. Nothing here refers back to YAML."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from tulle.api.model_base import UNLIMITED, Pairs, ResourceRef
from tulle.api.model_destinations import (
    ConnectionPool,
    DestinationPolicy,
    LoadBalancer,
    OutlierPolicy,
    PolicyLayer,
    Subset,
    TrafficSettings,
)
from tulle.api.model_locality import LocalityLbPolicy
from tulle.api.model_routes import (
    DEFAULT_RETRY_ON,
    CorsPolicy,
    FaultPolicy,
    HeaderEdits,
    HttpRoute,
    Mirror,
    Redirect,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    StringMatcher,
    TcpMatch,
    TcpRoute,
    WeightedDestination,
)
from tulle.api.model_security import (
    AuthorizationPolicyRule,
    AuthorizationRule,
    FallbackPolicy,
    PeerAuthenticationPolicy,
    RateLimitPolicy,
)
from tulle.api.model_services import (
    ReadinessCheck,
    Service,
    ServicePort,
    StaticEndpoint,
    Workload,
    WorkloadPort,
)

__all__ = [
    "DEFAULT_RETRY_ON",
    "UNLIMITED",
    "AuthorizationPolicyRule",
    "AuthorizationRule",
    "ConnectionPool",
    "CorsPolicy",
    "DestinationPolicy",
    "FallbackPolicy",
    "FaultPolicy",
    "HeaderEdits",
    "HttpRoute",
    "LoadBalancer",
    "MeshModel",
    "MeshSettings",
    "Mirror",
    "OutlierPolicy",
    "Pairs",
    "PeerAuthenticationPolicy",
    "PolicyLayer",
    "RateLimitPolicy",
    "ReadinessCheck",
    "Redirect",
    "ResourceRef",
    "RetryPolicy",
    "Rewrite",
    "RouteMatch",
    "ScopedPolicy",
    "ScopedRoutes",
    "Service",
    "ServicePort",
    "StaticEndpoint",
    "StringMatcher",
    "Subset",
    "TcpMatch",
    "TcpRoute",
    "TrafficSettings",
    "WeightedDestination",
    "Workload",
    "WorkloadPort",
    "pick_scoped",
]

T = TypeVar("T")


@dataclass(frozen=True)
class MeshSettings:
    """Mesh-wide settings (the Mesh resource, or its defaults)."""

    trust_domain: str = "cluster.local"
    mtls_mode: Literal["STRICT", "PERMISSIVE", "DISABLE"] = "PERMISSIVE"
    outbound_policy: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"
    access_log: bool = True
    access_log_format: Literal["JSON", "TEXT"] = "JSON"
    tracing_enabled: bool = True
    tracing_sampling: float = 1.0
    tracing_endpoint: str = ""  # OTLP/HTTP; empty: the control plane's trace store
    # http/protobuf: workloads send to tracing_endpoint; grpc: to the trace store, which relays
    tracing_protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    path_normalization: Literal["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] = (
        "BASE"
    )
    workload_certificate_lifetime: float = 86400.0  # seconds
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] = "DO_NOT_UPGRADE"
    num_trusted_proxies: int = 0  # X-Forwarded-For addresses the inbound side trusts
    # meshConfig.localityLbSetting; None: Istio's default (on, no rules)
    locality: LocalityLbPolicy | None = None


# --- visibility (exportTo, GAMMA consumer routes) -------------------------------------------


@dataclass(frozen=True)
class ScopedRoutes:
    """Routes of one host that only callers in ``namespaces`` see: a VirtualService's
    ``exportTo`` other than ``*``, or a GAMMA consumer route (an HTTPRoute in a namespace other
    than its Service's applies to callers in the route's namespace only). ``namespace`` is the
    resource's own."""

    namespace: str
    namespaces: frozenset[str]
    http: tuple[HttpRoute, ...] = ()
    tcp: tuple[TcpRoute, ...] = ()


@dataclass(frozen=True)
class ScopedPolicy:
    """A DestinationRule whose ``exportTo`` names namespaces (``namespace``: its own)."""

    namespace: str
    namespaces: frozenset[str]
    policy: DestinationPolicy


def pick_scoped(
    candidates: tuple[T, ...], namespace: str, own: Callable[[T], str], seen: Callable[[T], bool]
) -> T | None:
    """The candidate a caller in ``namespace`` uses, in Istio's order: one of the caller's own
    namespace first, then one exported to it, the first of each in config order."""
    visible = [c for c in candidates if seen(c)]
    mine = [c for c in visible if own(c) == namespace]
    chosen = mine or visible
    return chosen[0] if chosen else None


# --- the whole mesh -------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshModel:
    """Everything the control plane translates, keyed by fully qualified host where it applies."""

    settings: MeshSettings
    services: Mapping[str, Service]
    workloads: tuple[Workload, ...]
    http_routes: Mapping[str, tuple[HttpRoute, ...]]
    tcp_routes: Mapping[str, tuple[TcpRoute, ...]]
    destination_policies: Mapping[str, DestinationPolicy]
    peer_authentications: tuple[PeerAuthenticationPolicy, ...]
    authorization_policies: tuple[AuthorizationPolicyRule, ...]
    rate_limits: tuple[RateLimitPolicy, ...]
    fallbacks: tuple[FallbackPolicy, ...] = ()
    scoped_routes: Mapping[str, tuple[ScopedRoutes, ...]] = field(default_factory=dict)
    """Routes seen only in some namespaces, by host; ``http_routes``/``tcp_routes`` are the
    ones every namespace sees (exportTo ``*``, the default; GAMMA producer routes)."""
    scoped_policies: Mapping[str, tuple[ScopedPolicy, ...]] = field(default_factory=dict)
    """DestinationRules seen only in some namespaces, by host."""
    selected_policies: Mapping[str, tuple[DestinationPolicy, ...]] = field(default_factory=dict)
    """DestinationRules with a ``workloadSelector``, by host, in config order."""

    def http_routes_for(self, host: str, namespace: str) -> tuple[HttpRoute, ...]:
        """The HTTP routes of ``host`` that a caller in ``namespace`` uses: a scoped set it
        sees (its own namespace's first) takes precedence over the routes all namespaces see."""
        scoped = pick_scoped(
            self.scoped_routes.get(host, ()),
            namespace,
            lambda s: s.namespace,
            lambda s: bool(s.http) and namespace in s.namespaces,
        )
        return scoped.http if scoped is not None else self.http_routes.get(host, ())

    def tcp_routes_for(self, host: str, namespace: str) -> tuple[TcpRoute, ...]:
        """The TCP routes of ``host`` that a caller in ``namespace`` uses."""
        scoped = pick_scoped(
            self.scoped_routes.get(host, ()),
            namespace,
            lambda s: s.namespace,
            lambda s: bool(s.tcp) and namespace in s.namespaces,
        )
        return scoped.tcp if scoped is not None else self.tcp_routes.get(host, ())

    def destination_policy_for(
        self, host: str, namespace: str, labels: Pairs = ()
    ) -> DestinationPolicy | None:
        """The DestinationRule of ``host`` that a caller in ``namespace`` with ``labels`` uses:
        as Istio (1.20+), the first rule of the caller's namespace whose ``workloadSelector``
        its labels match, else the one rule without a selector it sees."""
        for policy in self.selected_policies.get(host, ()):
            if policy.selects(namespace, labels):
                return policy
        scoped = pick_scoped(
            self.scoped_policies.get(host, ()),
            namespace,
            lambda s: s.namespace,
            lambda s: namespace in s.namespaces,
        )
        return scoped.policy if scoped is not None else self.destination_policies.get(host)
