"""The Gateway API's HTTPRoute (``gateway.networking.k8s.io/v1``) attached to a Service: the
mesh (GAMMA) use, where the route applies to traffic sent to that Service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from tulle.api.kinds.base import (
    Duration,
    FieldError,
    HeaderName,
    HeaderText,
    PortNumber,
    Resource,
    Strict,
    check_regex,
    only_one,
)
from tulle.api.kinds.cors import HTTPCORSFilter

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSIONS = ("v1", "v1beta1")


MULTICLUSTER_GROUP = "multicluster.x-k8s.io"


class ServiceReference(Strict):
    """A Service by name, optionally in another namespace and at one port; or a multi-cluster
    service's ServiceImport (group ``multicluster.x-k8s.io``), which names the host
    ``<name>.<namespace>.svc.clusterset.local`` as Istio reads it (KEP-1645)."""

    group: Literal["", "core", "multicluster.x-k8s.io"] = ""
    kind: Literal["Service", "ServiceImport"] = "Service"
    name: str = Field(min_length=1)
    namespace: str | None = None
    port: PortNumber | None = None

    @model_validator(mode="after")
    def _group_of_kind(self) -> ServiceReference:
        groups = (MULTICLUSTER_GROUP,) if self.kind == "ServiceImport" else ("", "core")
        if self.group not in groups:
            raise FieldError(("group",), f"a {self.kind} is in group {groups[0]!r}")
        return self

    @property
    def is_service_import(self) -> bool:
        """A multi-cluster ServiceImport, not a Service."""
        return self.kind == "ServiceImport"


def check_backend_ref(ref: ServiceReference, filter_types: Sequence[str]) -> None:
    """An HTTPRoute's or GRPCRoute's backendRef: a Service needs a port (a ServiceImport's may be
    left out), and its filters (of types ``filter_types``) may only modify headers; the other
    filters belong on the rule."""
    if ref.port is None and not ref.is_service_import:
        raise FieldError(("port",), "required field is missing (a Service backend needs a port)")
    for index, filter_type in enumerate(filter_types):
        if filter_type not in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            raise FieldError(
                ("filters", index, "type"),
                f"{filter_type} is not supported on a backendRef; put it on the rule",
            )


def check_filter_config(filter_type: str, wanted: str, fields: Mapping[str, object]) -> None:
    """A route filter's ``type`` names the one field of ``fields`` (by its camelCase name) that
    must be set: raise unless ``wanted`` is set and no other is."""
    if fields[wanted] is None:
        raise ValueError(f"type {filter_type} needs the field {wanted}")
    extra = [name for name, value in fields.items() if value is not None and name != wanted]
    if extra:
        raise FieldError((extra[0],), f"does not belong to a filter of type {filter_type}")


class ParentReference(Strict):
    """What this route is attached to. ``kind`` defaults to ``Gateway`` and ``group`` to
    ``gateway.networking.k8s.io`` (Gateway API, ParentReference): only ``kind: Service`` in the
    core group (``""`` or ``core``) makes a mesh (GAMMA) route; the checks report the rest."""

    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    name: str = Field(min_length=1)
    namespace: str | None = None
    section_name: str | None = None
    port: PortNumber | None = None

    @property
    def is_service(self) -> bool:
        """A Service parent, or a multi-cluster ServiceImport (GEP-1748): the route applies to
        the mesh's traffic to that Service (or to the ServiceImport's clusterset host)."""
        if self.kind == "ServiceImport":
            return self.group == MULTICLUSTER_GROUP
        return self.kind == "Service" and self.group in ("", "core")

    @property
    def is_service_import(self) -> bool:
        """A multi-cluster ServiceImport parent."""
        return self.kind == "ServiceImport" and self.group == MULTICLUSTER_GROUP

    @property
    def is_gateway(self) -> bool:
        """A Gateway parent: an ingress route."""
        return self.kind == "Gateway" and self.group == GATEWAY_GROUP


def _check_typed_value(match_type: str, value: str) -> None:
    """A ``RegularExpression`` value must be a regex RE2 accepts."""
    if match_type == "RegularExpression":
        try:
            check_regex(value)
        except ValueError as error:
            raise FieldError(("value",), str(error)) from None


class PathMatch(Strict):
    """``path: {type: PathPrefix, value: /api}`` (default: prefix ``/``)."""

    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"

    @model_validator(mode="after")
    def _valid_value(self) -> PathMatch:
        _check_typed_value(self.type, self.value)
        if self.type != "RegularExpression" and not self.value.startswith("/"):
            raise FieldError(("value",), f"path {self.value!r} must start with '/'")
        return self


class ValueMatch(Strict):
    """A header or query parameter match: ``{name, value, type: Exact|RegularExpression}``."""

    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str = Field(min_length=1)
    value: str

    @model_validator(mode="after")
    def _valid_regex(self) -> ValueMatch:
        _check_typed_value(self.type, self.value)
        return self


class HeaderMatch(ValueMatch):
    """A header match: its name a header name."""

    name: HeaderName


class HTTPRouteMatch(Strict):
    """All conditions must hold for the rule to apply."""

    path: PathMatch | None = None
    headers: list[HeaderMatch] = Field(default_factory=list)
    query_params: list[ValueMatch] = Field(default_factory=list)
    method: (
        Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
        | None
    ) = None


class HeaderValue(Strict):
    """``{name, value}``."""

    name: HeaderName
    value: HeaderText


class HeaderModifier(Strict):
    """Set, add and remove headers."""

    set: list[HeaderValue] = Field(default_factory=list)
    add: list[HeaderValue] = Field(default_factory=list)
    remove: list[HeaderName] = Field(default_factory=list)


class PathModifier(Strict):
    """Replace the whole path, or only the prefix the rule matched."""

    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None

    @model_validator(mode="after")
    def _value_for_type(self) -> PathModifier:
        wanted = "replace_full_path" if self.type == "ReplaceFullPath" else "replace_prefix_match"
        other = "replace_prefix_match" if wanted == "replace_full_path" else "replace_full_path"
        if getattr(self, wanted) is None or getattr(self, other) is not None:
            camel = "replaceFullPath" if wanted == "replace_full_path" else "replacePrefixMatch"
            raise ValueError(f"type {self.type} needs {camel} and only it")
        return self


class RequestRedirect(Strict):
    """Answer with a redirect."""

    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: PortNumber | None = None
    status_code: Literal[301, 302, 303, 307, 308] = 302


class URLRewrite(Strict):
    """Rewrite host and path before forwarding."""

    hostname: str | None = None
    path: PathModifier | None = None


class BackendObjectReference(ServiceReference):
    """The Service requests are mirrored to."""


class Fraction(Strict):
    """``numerator / denominator`` (denominator 100 by default)."""

    numerator: Annotated[int, Field(ge=0)]
    denominator: Annotated[int, Field(ge=1)] = 100


class RequestMirror(Strict):
    """Copy requests to another backend, fire and forget."""

    backend_ref: BackendObjectReference
    percent: Annotated[int, Field(ge=0, le=100)] | None = None
    fraction: Fraction | None = None

    @model_validator(mode="after")
    def _one_share(self) -> RequestMirror:
        only_one(self, "percent", "fraction")
        if self.fraction is not None and self.fraction.numerator > self.fraction.denominator:
            raise FieldError(("fraction",), "numerator must not exceed denominator")
        return self


class HTTPRouteFilter(Strict):
    """A filter: ``type`` names the one field that must be set."""

    type: Literal[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestRedirect",
        "URLRewrite",
        "RequestMirror",
        "CORS",
    ]
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: URLRewrite | None = None
    request_mirror: RequestMirror | None = None
    cors: HTTPCORSFilter | None = None

    @model_validator(mode="after")
    def _config_matches_type(self) -> HTTPRouteFilter:
        wanted = self.type[0].lower() + self.type[1:]
        if self.type in ("URLRewrite", "CORS"):
            wanted = {"URLRewrite": "urlRewrite", "CORS": "cors"}[self.type]
        fields = {
            "requestHeaderModifier": self.request_header_modifier,
            "responseHeaderModifier": self.response_header_modifier,
            "requestRedirect": self.request_redirect,
            "urlRewrite": self.url_rewrite,
            "requestMirror": self.request_mirror,
            "cors": self.cors,
        }
        check_filter_config(self.type, wanted, fields)
        return self


class HTTPBackendRef(ServiceReference):
    """A weighted backend Service (weights are relative; default 1)."""

    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    filters: list[HTTPRouteFilter] = Field(default_factory=list)

    @model_validator(mode="after")
    def _port_and_filters(self) -> HTTPBackendRef:
        check_backend_ref(self, [backend_filter.type for backend_filter in self.filters])
        return self


class HTTPRouteTimeouts(Strict):
    """``request``: the whole request, retries included; ``backendRequest``: each attempt."""

    request: Duration | None = None
    backend_request: Duration | None = None


class HTTPRouteRule(Strict):
    """Matches, filters and backends of one rule."""

    name: str | None = None
    matches: list[HTTPRouteMatch] = Field(default_factory=list)
    filters: list[HTTPRouteFilter] = Field(default_factory=list)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list)
    timeouts: HTTPRouteTimeouts | None = None

    @model_validator(mode="after")
    def _backends_or_redirect(self) -> HTTPRouteRule:
        """backendRefs are optional: a rule without them forwards nothing (it answers 500
        unless a filter, a RequestRedirect, answers: Gateway API, HTTPRouteRule.backendRefs)."""
        redirects = [f for f in self.filters if f.type == "RequestRedirect"]
        if redirects and self.backend_refs:
            raise ValueError("a rule with a RequestRedirect filter cannot have backendRefs")
        rewrites = [f for f in self.filters if f.type == "URLRewrite"]
        if redirects and rewrites:
            raise ValueError("URLRewrite and RequestRedirect cannot be combined")
        return self


class HTTPRouteSpec(Strict):
    """Rules for traffic sent to the parent Service(s)."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[HTTPRouteRule] = Field(default_factory=lambda: [])


class HTTPRoute(Resource):
    """Gateway API HTTPRoute with a Service parent."""

    KIND: ClassVar[str] = "HTTPRoute"
    GROUP: ClassVar[str] = GATEWAY_GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = GATEWAY_VERSIONS

    spec: HTTPRouteSpec
