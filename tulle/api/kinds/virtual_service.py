"""Istio's VirtualService (``networking.istio.io``): HTTP and TCP routes, their matches,
destinations, retries, faults, redirects, rewrites and mirrors.

Field names, defaults and meaning follow Istio's reference documentation; only the fields Tulle
implements exist, so a field Tulle would silently ignore is reported as unknown instead."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tulle.api.kinds.base import (
    INT32_MAX,
    Duration,
    FieldError,
    HeaderName,
    HeaderText,
    Host,
    Labels,
    Percent,
    PortNumber,
    PositiveDuration,
    Strict,
    StringMatch,
    check_cidrs,
    only_one,
)
from tulle.api.kinds.cors import CorsPolicy
from tulle.api.kinds.deprecated import integer_percent
from tulle.api.kinds.networking_common import NetworkingResource, PortSelector, Weight

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


# --- VirtualService -------------------------------------------------------------------------


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
    """Answer with a redirect instead of forwarding: ``uri`` replaces the whole path,
    ``prefixRewrite`` the prefix the route matched (as Envoy's RedirectAction prefix_rewrite)."""

    uri: str | None = None
    prefix_rewrite: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    scheme: Literal["http", "https"] | None = None
    redirect_code: Annotated[int, Field(ge=300, le=399)] = 301

    @model_validator(mode="after")
    def _one_path(self) -> HTTPRedirect:
        only_one(self, "uri", "prefix_rewrite")
        return self


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
    percent: Annotated[int, Field(ge=0, le=100)] | None = None  # deprecated: percentage

    @model_validator(mode="before")
    @classmethod
    def _deprecated(cls, data: Any) -> Any:
        return integer_percent(data, "percent", "percentage")


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


class Delegate(Strict):
    """The VirtualService (one with no ``hosts``) whose HTTP routes stand in for this route:
    its namespace defaults to the root's."""

    name: str = Field(min_length=1)
    namespace: str | None = None


class HTTPRoute(Strict):
    """One HTTP rule of a VirtualService: matches and what to do with matching requests; or,
    with ``delegate``, matches another VirtualService's routes refine (Istio's delegation)."""

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
    mirror_percent: Annotated[int, Field(ge=0, le=100)] | None = None  # deprecated
    headers: Headers | None = None
    cors_policy: CorsPolicy | None = None
    delegate: Delegate | None = None

    @model_validator(mode="before")
    @classmethod
    def _deprecated(cls, data: Any) -> Any:
        return integer_percent(data, "mirrorPercent", "mirrorPercentage")

    @model_validator(mode="after")
    def _route_or_redirect(self) -> HTTPRoute:
        if self.delegate is not None:  # Istio: "root HTTP route must not specify route/redirect"
            if self.route:
                raise FieldError(("route",), "a route with delegate must not set route")
            if self.redirect is not None:
                raise FieldError(("redirect",), "a route with delegate must not set redirect")
            return self
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
    """Routing rules for the ``hosts`` named. With no ``hosts``, a delegate: routes a root
    VirtualService's ``delegate`` takes in (Istio: no gateways, no tcp routes, and no delegate
    of its own, as delegation is one level deep)."""

    hosts: list[Host] = Field(default_factory=list)
    gateways: list[Literal["mesh"]] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _delegate_rules(self) -> VirtualServiceSpec:
        if self.hosts:
            return self
        if self.gateways:
            raise FieldError(("gateways",), "a delegate VirtualService (no hosts) has no gateways")
        if self.tcp:
            raise FieldError(("tcp",), "a delegate VirtualService (no hosts) has no tcp routes")
        if not self.http:
            raise FieldError(
                ("hosts",),
                "set hosts (the VirtualService's hosts), or http routes for a delegate "
                "VirtualService (one with no hosts)",
            )
        for index, route in enumerate(self.http):
            if route.delegate is not None:
                raise FieldError(
                    ("http", index, "delegate"),
                    "a delegate VirtualService's routes cannot delegate (one level only)",
                )
        return self

    @property
    def is_delegate(self) -> bool:
        """A delegate VirtualService: it has no hosts of its own."""
        return not self.hosts


class VirtualService(NetworkingResource):
    """Istio VirtualService: how requests to a host are routed."""

    KIND: ClassVar[str] = "VirtualService"

    spec: VirtualServiceSpec
