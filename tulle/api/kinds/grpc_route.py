"""The Gateway API's GRPCRoute (``gateway.networking.k8s.io/v1``) attached to a Service: mesh
(GAMMA) gRPC routing by service and method, headers, weighted backends and filters. It becomes
the same model routes as an HTTPRoute (a gRPC method is the path ``/service/method``)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from tulle.api.kinds.base import FieldError, Resource, Strict, check_regex
from tulle.api.kinds.gateway import (
    GATEWAY_GROUP,
    HeaderMatch,
    HeaderModifier,
    ParentReference,
    RequestMirror,
    ServiceReference,
    check_backend_ref,
    check_filter_config,
)

GRPC_ROUTE_VERSIONS = ("v1", "v1alpha2")

# The Gateway API's CEL rules for Exact matches (GRPCMethodMatch).
_SERVICE = re.compile(r"(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*\Z")
_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*\Z")


class GRPCMethodMatch(Strict):
    """``method: {service: shop.Cart, method: Get}``: one or both; ``type`` Exact (default) or
    RegularExpression (each of service and method a regex)."""

    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: Annotated[str, Field(max_length=1024)] | None = None
    method: Annotated[str, Field(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _valid(self) -> GRPCMethodMatch:
        if not self.service and not self.method:
            raise ValueError("set service, method or both")
        for name, value, shape in (
            ("service", self.service, _SERVICE),
            ("method", self.method, _METHOD),
        ):
            if not value:
                continue
            if self.type == "RegularExpression":
                try:
                    check_regex(value)
                except ValueError as error:
                    raise FieldError((name,), str(error)) from None
            elif not shape.match(value):
                wanted = shape.pattern.removesuffix("\\Z")
                message = f"{value[:80]!r} is not a gRPC {name} name (must match {wanted})"
                raise FieldError((name,), message)
        return self


class GRPCRouteMatch(Strict):
    """All conditions must hold: the method, and each header (first of each name)."""

    method: GRPCMethodMatch | None = None
    headers: list[HeaderMatch] = Field(default_factory=list)


class GRPCRouteFilter(Strict):
    """A filter: ``type`` names the one field that must be set."""

    type: Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror"]
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_mirror: RequestMirror | None = None

    @model_validator(mode="after")
    def _config_matches_type(self) -> GRPCRouteFilter:
        fields = {
            "requestHeaderModifier": self.request_header_modifier,
            "responseHeaderModifier": self.response_header_modifier,
            "requestMirror": self.request_mirror,
        }
        check_filter_config(self.type, self.type[0].lower() + self.type[1:], fields)
        return self


class GRPCBackendRef(ServiceReference):
    """A weighted backend Service (weights are relative; default 1)."""

    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    filters: list[GRPCRouteFilter] = Field(default_factory=list)

    @model_validator(mode="after")
    def _port_and_filters(self) -> GRPCBackendRef:
        check_backend_ref(self, [backend_filter.type for backend_filter in self.filters])
        return self


class GRPCRouteRule(Strict):
    """Matches, filters and backends of one rule (no matches: every call)."""

    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default_factory=list)
    filters: list[GRPCRouteFilter] = Field(default_factory=list)
    backend_refs: list[GRPCBackendRef] = Field(default_factory=list)


class GRPCRouteSpec(Strict):
    """Rules for gRPC calls to the parent Service(s)."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[GRPCRouteRule] = Field(default_factory=lambda: [])


class GRPCRoute(Resource):
    """Gateway API GRPCRoute with a Service parent."""

    KIND: ClassVar[str] = "GRPCRoute"
    GROUP: ClassVar[str] = GATEWAY_GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = GRPC_ROUTE_VERSIONS

    spec: GRPCRouteSpec
