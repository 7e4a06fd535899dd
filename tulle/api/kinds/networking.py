"""Istio's traffic kinds (``networking.istio.io``): VirtualService, DestinationRule, ServiceEntry.

Field names, defaults and meaning follow Istio's reference documentation; only the fields Tulle
implements exist, so a field Tulle would silently ignore is reported as unknown instead."""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from tulle.api.hosts import is_valid_host
from tulle.api.kinds.base import (
    INT32_MAX,
    UINT32_MAX,
    Duration,
    FieldError,
    HeaderName,
    HeaderText,
    Host,
    Labels,
    Percent,
    PortNumber,
    PositiveDuration,
    Resource,
    Strict,
    StringMatch,
    check_cidrs,
    only_one,
    reject_repeats,
)
from tulle.api.names import check_dns_subdomain, check_locality, endpoint_address

NETWORKING_GROUP = "networking.istio.io"
NETWORKING_VERSIONS = ("v1", "v1beta1", "v1alpha3")

# Retry conditions Envoy and Istio understand (x-envoy-retry-on and x-envoy-retry-grpc-on).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

GRPC_STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

Weight = Annotated[int, Field(ge=0, le=INT32_MAX)]
"""Relative: a destination gets ``weight / sum of weights`` (Istio's VirtualService reference)."""
MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's and grpcio's largest hash ring


# --- VirtualService -------------------------------------------------------------------------


class PortSelector(Strict):
    """``port: {number: 8080}``."""

    number: PortNumber


class Destination(Strict):
    """Where a route sends traffic: a service host, optionally a subset and a port."""

    host: Host
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Strict):
    """Header edits: ``set`` overwrites, ``add`` appends, ``remove`` deletes."""

    set: dict[HeaderName, HeaderText] = Field(default_factory=dict)
    add: dict[HeaderName, HeaderText] = Field(default_factory=dict)
    remove: list[HeaderName] = Field(default_factory=list)


class Headers(Strict):
    """Header edits on the request (before forwarding) and on the response."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPMatchRequest(Strict):
    """Conditions a request must meet, all of them, for a route to apply."""

    name: str | None = None
    uri: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[HeaderName, StringMatch] = Field(default_factory=dict)
    without_headers: dict[HeaderName, StringMatch] = Field(default_factory=dict)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    port: PortNumber | None = None
    source_labels: Labels = Field(default_factory=dict)
    ignore_uri_case: bool = False

    @field_validator("uri", "method", "authority")
    @classmethod
    def _matcher_set(cls, value: StringMatch | None) -> StringMatch | None:
        if value is not None and value.is_empty:
            raise ValueError("set one of exact, prefix, regex")
        return value


class HTTPRouteDestination(Strict):
    """A weighted destination of an HTTP route, with its own header edits."""

    destination: Destination
    weight: Weight | None = None
    headers: Headers | None = None


class HTTPRedirect(Strict):
    """Answer with a redirect instead of forwarding."""

    uri: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    scheme: Literal["http", "https"] | None = None
    redirect_code: Annotated[int, Field(ge=300, le=399)] = 301


class HTTPRewrite(Strict):
    """Rewrite the path (the matched prefix, or the whole path on an exact match) and authority."""

    uri: str | None = None
    authority: str | None = None


class HTTPRetry(Strict):
    """Retry policy: how many attempts, the timeout of each, and on which failures."""

    attempts: Annotated[int, Field(ge=0, le=INT32_MAX)]
    per_try_timeout: PositiveDuration | None = None
    retry_on: str | None = None

    @field_validator("retry_on")
    @classmethod
    def _known_conditions(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for condition in (part.strip() for part in value.split(",")):
            if condition in RETRY_ON:
                continue
            if condition.isdigit() and 100 <= int(condition) <= 599:
                continue
            raise ValueError(
                f"unknown retry condition {condition!r}; use HTTP status codes or "
                f"{', '.join(sorted(RETRY_ON))}"
            )
        return value


class Delay(Strict):
    """Fault: delay a share of requests by a fixed time."""

    fixed_delay: Duration
    percentage: Percent | None = None


class Abort(Strict):
    """Fault: answer a share of requests with an error instead of forwarding them."""

    http_status: Annotated[int, Field(ge=200, le=599)] | None = None
    grpc_status: str | None = None
    percentage: Percent | None = None

    @field_validator("grpc_status")
    @classmethod
    def _grpc_status_name(cls, value: str | None) -> str | None:
        if value is not None and value not in GRPC_STATUS_NAMES:
            raise ValueError(
                f"unknown gRPC status {value!r}; use one of {', '.join(GRPC_STATUS_NAMES)}"
            )
        return value

    @model_validator(mode="after")
    def _one_status(self) -> Abort:
        only_one(self, "http_status", "grpc_status", required=True)
        return self


class HTTPFaultInjection(Strict):
    """Faults injected on the client side: a delay, an abort, or both."""

    delay: Delay | None = None
    abort: Abort | None = None

    @model_validator(mode="after")
    def _something(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise ValueError("set delay, abort or both")
        return self


class HTTPRoute(Strict):
    """One HTTP rule of a VirtualService: matches and what to do with matching requests."""

    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _route_or_redirect(self) -> HTTPRoute:
        if self.redirect is not None and self.route:
            raise ValueError("set either route or redirect, not both")
        if self.redirect is None and not self.route:
            raise ValueError("set route (where to send requests) or redirect")
        if self.redirect is not None and self.rewrite is not None:
            raise ValueError("rewrite cannot be used with redirect")
        return self


class L4MatchAttributes(Strict):
    """Conditions for a TCP route: destination port, subnets, source labels."""

    port: PortNumber | None = None
    destination_subnets: list[str] = Field(default_factory=list)
    source_labels: Labels = Field(default_factory=dict)

    _cidrs = field_validator("destination_subnets")(check_cidrs)


class RouteDestination(Strict):
    """A weighted destination of a TCP route."""

    destination: Destination
    weight: Weight | None = None


class TCPRoute(Strict):
    """One TCP rule of a VirtualService."""

    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(min_length=1)


class VirtualServiceSpec(Strict):
    """Routing rules for the ``hosts`` named."""

    hosts: list[Host] = Field(min_length=1)
    gateways: list[Literal["mesh"]] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)


class NetworkingResource(Resource):
    """Base of the ``networking.istio.io`` kinds."""

    GROUP: ClassVar[str] = NETWORKING_GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = NETWORKING_VERSIONS


class VirtualService(NetworkingResource):
    """Istio VirtualService: how requests to a host are routed."""

    KIND: ClassVar[str] = "VirtualService"

    spec: VirtualServiceSpec


# --- DestinationRule ------------------------------------------------------------------------


class HTTPCookie(Strict):
    """The cookie a consistent hash is taken over (``ttl`` makes the proxy set it)."""

    name: str = Field(min_length=1)
    path: str | None = None
    ttl: Duration | None = None


class ConsistentHash(Strict):
    """Ring hash load balancing, keyed on exactly one property of the request."""

    http_header_name: HeaderName | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: Annotated[str, Field(min_length=1)] | None = None
    minimum_ring_size: Annotated[int, Field(ge=1, le=MAX_RING_SIZE)] | None = None

    @model_validator(mode="after")
    def _one_key(self) -> ConsistentHash:
        only_one(
            self,
            "http_header_name",
            "http_cookie",
            "use_source_ip",
            "http_query_parameter_name",
            required=True,
        )
        if self.use_source_ip is False:
            raise ValueError("useSourceIp: false hashes on nothing; set it true or use another key")
        return self


class LoadBalancerSettings(Strict):
    """``simple`` algorithm or ``consistentHash``, not both."""

    simple: Literal["ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM"] | None = None
    consistent_hash: ConsistentHash | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> LoadBalancerSettings:
        only_one(self, "simple", "consistent_hash", required=True)
        return self


class TCPSettings(Strict):
    """TCP connection limits."""

    max_connections: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    connect_timeout: PositiveDuration | None = None


class HTTPSettings(Strict):
    """HTTP request limits (circuit breaking) and connection reuse."""

    http1_max_pending_requests: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    http2_max_requests: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    max_requests_per_connection: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    idle_timeout: PositiveDuration | None = None


class ConnectionPoolSettings(Strict):
    """Circuit-breaker limits on connections and requests to each host of a service."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Strict):
    """Eject endpoints that keep failing, for a time that grows with each ejection."""

    consecutive_5xx_errors: Annotated[int, Field(ge=0, le=UINT32_MAX)] | None = Field(
        default=None, alias="consecutive5xxErrors"
    )
    consecutive_gateway_errors: Annotated[int, Field(ge=0, le=UINT32_MAX)] | None = None
    interval: PositiveDuration | None = None
    base_ejection_time: PositiveDuration | None = None
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    min_health_percent: Annotated[int, Field(ge=0, le=100)] | None = None


class ClientTLSSettings(Strict):
    """How the client side talks to the destination: Tulle's mTLS or plain text."""

    mode: Literal["DISABLE", "ISTIO_MUTUAL"]


class PortTrafficPolicy(Strict):
    """Traffic policy for one port of the destination, overriding the service-wide one."""

    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(Strict):
    """Load balancing, connection limits, outlier detection and TLS for a destination."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)

    @field_validator("port_level_settings")
    @classmethod
    def _unique_ports(cls, value: list[PortTrafficPolicy]) -> list[PortTrafficPolicy]:
        reject_repeats([setting.port.number for setting in value], (), "port", "port")
        return value


class Subset(Strict):
    """A named group of a service's endpoints, picked by labels (e.g. ``version: v2``)."""

    name: str = Field(min_length=1)
    labels: Labels = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Strict):
    """Policies applied to traffic for ``host`` after routing."""

    host: Host
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)

    @field_validator("subsets")
    @classmethod
    def _unique_subsets(cls, value: list[Subset]) -> list[Subset]:
        reject_repeats([subset.name for subset in value], (), "name", "subset name")
        return value


class DestinationRule(NetworkingResource):
    """Istio DestinationRule: subsets and traffic policy of a service."""

    KIND: ClassVar[str] = "DestinationRule"

    spec: DestinationRuleSpec


# --- ServiceEntry ---------------------------------------------------------------------------

Protocol = Literal["HTTP", "HTTPS", "GRPC", "HTTP2", "TCP", "TLS", "MONGO"]


class ServicePort(Strict):
    """A port of a ServiceEntry."""

    number: PortNumber
    protocol: Protocol = "TCP"
    name: str | None = None
    target_port: PortNumber | None = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class WorkloadEntry(Strict):
    """A static endpoint of a ServiceEntry."""

    address: str = Field(min_length=1)
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    weight: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = None
    locality: Annotated[str, AfterValidator(check_locality)] | None = None
    service_account: Annotated[str, AfterValidator(check_dns_subdomain)] | None = None

    @field_validator("address")
    @classmethod
    def _host_or_address(cls, value: str) -> str:
        """An IP address of one host, or a DNS name (resolved with resolution DNS)."""
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not is_valid_host(value) or "*" in value:
                raise ValueError(f"{value!r} is neither an IP address nor a DNS name") from None
            return value
        endpoint_address(value)
        return value


class WorkloadSelector(Strict):
    """``workloadSelector: {labels: {...}}``: the workloads that are this service's endpoints."""

    labels: Labels = Field(default_factory=dict)


class ServiceEntrySpec(Strict):
    """Services the mesh should know that no Workload provides: external APIs, VMs, servers."""

    hosts: list[Host] = Field(min_length=1)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[WorkloadEntry] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)

    _addresses = field_validator("addresses")(check_cidrs)

    @model_validator(mode="after")
    def _consistent(self) -> ServiceEntrySpec:
        if self.endpoints and self.workload_selector is not None:
            raise ValueError("set endpoints or workloadSelector, not both")
        if self.resolution == "STATIC":
            for index, endpoint in enumerate(self.endpoints):
                try:
                    ipaddress.ip_address(endpoint.address)
                except ValueError:
                    raise FieldError(
                        ("endpoints", index, "address"),
                        f"{endpoint.address!r} must be an IP address with resolution STATIC "
                        "(use resolution DNS for host names)",
                    ) from None
        names = {port.name for port in self.ports if port.name}
        for index, endpoint in enumerate(self.endpoints):
            unknown = sorted(set(endpoint.ports) - names)
            if unknown:
                raise FieldError(
                    ("endpoints", index, "ports", unknown[0]),
                    f"names port {unknown[0]!r}, which spec.ports does not declare",
                )
        reject_repeats([port.number for port in self.ports], ("ports",), "number", "port")
        return self


class ServiceEntry(NetworkingResource):
    """Istio ServiceEntry: adds a service and its endpoints to the mesh's registry."""

    KIND: ClassVar[str] = "ServiceEntry"

    spec: ServiceEntrySpec
