"""The mesh model: every resource normalized into one immutable value that later parts consume.

VirtualService and HTTPRoute both become :class:`HttpRoute` lists per host; DestinationRules become
:class:`DestinationPolicy` with Istio's defaults filled in; hosts are fully qualified; durations
are seconds (floats); percentages are floats from 0 to 100. Nothing here refers back to YAML."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

T = TypeVar("T")

Pairs = tuple[tuple[str, str], ...]
"""An immutable mapping written as sorted ``(key, value)`` pairs (labels, headers)."""

UNLIMITED = None
"""A limit that is not set: no limit."""


@dataclass(frozen=True)
class ResourceRef:
    """Which resource a part of the model came from: ``Kind namespace/name``."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class MeshSettings:
    """Mesh-wide settings (the Mesh resource, or its defaults)."""

    trust_domain: str = "cluster.local"
    mtls_mode: Literal["STRICT", "PERMISSIVE", "DISABLE"] = "PERMISSIVE"
    outbound_policy: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"
    access_log: bool = True
    access_log_format: Literal["JSON", "TEXT"] = "JSON"
    tracing_sampling: float = 1.0
    path_normalization: Literal["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] = (
        "BASE"
    )
    workload_certificate_lifetime: float = 86400.0  # seconds


# --- services and workloads -----------------------------------------------------------------


@dataclass(frozen=True)
class ServicePort:
    """A port of a service: the number clients call, its protocol, and the endpoint's port."""

    number: int
    protocol: str
    name: str | None = None
    target_port: int | None = None


@dataclass(frozen=True)
class StaticEndpoint:
    """An endpoint written in config (ServiceEntry ``endpoints``)."""

    address: str
    ports: Pairs = ()
    labels: Pairs = ()
    weight: int = 1
    locality: str | None = None
    service_account: str | None = None


@dataclass(frozen=True)
class Service:
    """A service of the mesh: a fully qualified host with ports, from Workloads or a
    ServiceEntry."""

    host: str
    namespace: str
    ports: tuple[ServicePort, ...]
    location: Literal["MESH_INTERNAL", "MESH_EXTERNAL"]
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]
    origins: tuple[ResourceRef, ...]
    addresses: tuple[str, ...] = ()
    endpoints: tuple[StaticEndpoint, ...] = ()
    workload_selector: Pairs | None = None
    export_to: frozenset[str] | None = None
    """The namespaces that see this service (a ServiceEntry's ``exportTo``); None: all."""

    def visible_in(self, namespace: str) -> bool:
        """Whether callers in ``namespace`` see this service."""
        return self.export_to is None or namespace in self.export_to


@dataclass(frozen=True)
class ReadinessCheck:
    """How a replica is known to be ready: ``http`` GET of ``path``, or a ``tcp`` connect."""

    kind: Literal["http", "tcp"]
    path: str | None
    port: str | None
    period: float
    timeout: float


@dataclass(frozen=True)
class WorkloadPort:
    """A port a workload serves."""

    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Workload:
    """A local-mode program: its service, how to run it, and how it joins the mesh."""

    name: str
    namespace: str
    service_host: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: Pairs
    replicas: int
    ports: tuple[WorkloadPort, ...]
    service_account: str
    labels: Pairs
    mesh: Literal["sidecar", "library", "proxyless", "none"]
    readiness: ReadinessCheck | None
    origin: ResourceRef

    @property
    def label_map(self) -> dict[str, str]:
        """The workload's labels (``app`` included) as a dict."""
        return dict(self.labels)


# --- routing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StringMatcher:
    """A string condition. ``path_prefix`` is the Gateway API's segment-wise prefix (``/a``
    matches ``/a`` and ``/a/b``, not ``/ab``); ``present`` only asks that the value exists."""

    kind: Literal["exact", "prefix", "path_prefix", "regex", "present"]
    value: str = ""
    ignore_case: bool = False


@dataclass(frozen=True)
class RouteMatch:
    """All set conditions must hold. Header names are lowercase."""

    path: StringMatcher | None = None
    method: StringMatcher | None = None
    authority: StringMatcher | None = None
    headers: tuple[tuple[str, StringMatcher], ...] = ()
    without_headers: tuple[tuple[str, StringMatcher], ...] = ()
    query_params: tuple[tuple[str, StringMatcher], ...] = ()
    port: int | None = None
    source_labels: Pairs = ()

    @property
    def is_catch_all(self) -> bool:
        """True when the match accepts every request."""
        path_is_all = self.path is None or (
            self.path.kind in ("prefix", "path_prefix") and self.path.value in ("", "/")
        )
        return path_is_all and self == RouteMatch(path=self.path)


@dataclass(frozen=True)
class HeaderEdits:
    """``set`` overwrites, ``add`` appends, ``remove`` deletes (names lowercase)."""

    set: Pairs = ()
    add: Pairs = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True)
class WeightedDestination:
    """A destination service (host, optional subset and port) and its relative weight."""

    host: str
    subset: str | None = None
    port: int | None = None
    weight: int = 1
    request_headers: HeaderEdits = field(default_factory=HeaderEdits)
    response_headers: HeaderEdits = field(default_factory=HeaderEdits)


@dataclass(frozen=True)
class Redirect:
    """Answer with a redirect. ``path`` replaces the whole path, ``prefix`` the matched prefix."""

    status: int
    scheme: str | None = None
    authority: str | None = None
    port: int | None = None
    path: str | None = None
    prefix: str | None = None
    derive_port: bool = False
    """Gateway API RequestRedirect: with no ``port``, the scheme's well-known port when a
    scheme is given, else the port the request came to (the listener's), even with another
    hostname."""


@dataclass(frozen=True)
class Rewrite:
    """Rewrite before forwarding: ``prefix`` replaces the matched prefix, ``path`` the whole
    path; ``authority`` replaces the Host."""

    prefix: str | None = None
    path: str | None = None
    authority: str | None = None


DEFAULT_RETRY_ON = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries: total extra attempts, each attempt's timeout, and the conditions to retry on.
    Istio's default when a route sets none: 2 attempts on connect failures, refused streams,
    gRPC unavailable/cancelled and HTTP 503."""

    attempts: int = 2
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    retriable_status_codes: tuple[int, ...] = (503,)


@dataclass(frozen=True)
class FaultPolicy:
    """Injected faults: a delay and/or an abort, each applied to a percentage of requests."""

    delay: float | None = None
    delay_percent: float = 100.0
    abort_http_status: int | None = None
    abort_grpc_status: str | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class Mirror:
    """Copy a percentage of requests to another destination, fire and forget."""

    host: str
    subset: str | None = None
    port: int | None = None
    percent: float = 100.0


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP rule for a host: first rule whose matches accept the request wins. No matches
    means every request. Either ``destinations`` or ``redirect`` is set."""

    origin: ResourceRef
    name: str | None = None
    matches: tuple[RouteMatch, ...] = ()
    destinations: tuple[WeightedDestination, ...] = ()
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    timeout: float | None = None
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    fault: FaultPolicy | None = None
    mirrors: tuple[Mirror, ...] = ()
    request_headers: HeaderEdits = field(default_factory=HeaderEdits)
    response_headers: HeaderEdits = field(default_factory=HeaderEdits)


@dataclass(frozen=True)
class TcpMatch:
    """Conditions for a TCP route."""

    port: int | None = None
    destination_subnets: tuple[str, ...] = ()
    source_labels: Pairs = ()


@dataclass(frozen=True)
class TcpRoute:
    """One TCP rule for a host."""

    origin: ResourceRef
    matches: tuple[TcpMatch, ...]
    destinations: tuple[WeightedDestination, ...]


# --- destination policy ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoadBalancer:
    """The algorithm, and for ``RING_HASH`` what it hashes on."""

    policy: Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH"] = "LEAST_REQUEST"
    hash_on: Literal["header", "cookie", "source_ip", "query_parameter"] | None = None
    hash_key: str | None = None
    cookie_path: str | None = None
    cookie_ttl: float | None = None
    minimum_ring_size: int | None = None


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


# --- security and rate limits ---------------------------------------------------------------


@dataclass(frozen=True)
class PeerAuthenticationPolicy:
    """The mTLS mode for the workloads ``selector`` picks (None: the whole namespace, or the
    whole mesh when in the root namespace)."""

    origin: ResourceRef
    namespace: str
    selector: Pairs | None
    mode: Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
    port_modes: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class AuthorizationRule:
    """A rule: any ``sources`` entry, any ``operations`` entry, and every condition must match.
    Each entry is the original Istio field map as sorted pairs of (field, values)."""

    sources: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = ()
    operations: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = ()
    conditions: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class AuthorizationPolicyRule:
    """An AuthorizationPolicy for the workloads ``selector`` picks (None: whole namespace)."""

    origin: ResourceRef
    namespace: str
    selector: Pairs | None
    action: Literal["ALLOW", "DENY", "AUDIT"]
    rules: tuple[AuthorizationRule, ...]


@dataclass(frozen=True)
class RateLimitPolicy:
    """A token bucket: ``rate`` tokens per second, ``burst`` at most; inbound at selected
    workloads or outbound to ``target_host`` (and ``target_route``)."""

    origin: ResourceRef
    namespace: str
    rate: float
    burst: int
    status_code: int
    selector: Pairs | None = None
    target_host: str | None = None
    target_route: str | None = None


@dataclass(frozen=True)
class FallbackPolicy:
    """Calls to ``host`` that fail on one of ``when`` go once to ``to_host`` (on ``to_port``,
    or the port that was called)."""

    origin: ResourceRef
    host: str
    to_host: str
    to_port: int | None
    when: tuple[str, ...]


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

    def destination_policy_for(self, host: str, namespace: str) -> DestinationPolicy | None:
        """The DestinationRule of ``host`` that a caller in ``namespace`` uses."""
        scoped = pick_scoped(
            self.scoped_policies.get(host, ()),
            namespace,
            lambda s: s.namespace,
            lambda s: namespace in s.namespaces,
        )
        return scoped.policy if scoped is not None else self.destination_policies.get(host)
