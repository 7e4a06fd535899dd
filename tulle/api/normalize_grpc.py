"""Normalization of Gateway API GRPCRoutes (GAMMA: Service parents) into the same
:class:`~tulle.api.model.HttpRoute` an HTTPRoute makes: a gRPC method is the path
``/<service>/<method>``, so a method match is a path match, as Envoy-based implementations
translate it. Rules are ordered by GRPCRoute precedence (the longest service, then the longest
method, then the most header matches; ties in the order written)."""

from __future__ import annotations

from tulle.api.kinds.grpc_route import GRPCMethodMatch, GRPCRoute, GRPCRouteMatch, GRPCRouteRule
from tulle.api.model import (
    HttpRoute,
    ResourceRef,
    RouteMatch,
    StringMatcher,
)
from tulle.api.normalize_common import HostResolver, ref
from tulle.api.normalize_gateway import (
    backend_destinations,
    first_of_each_name,
    header_and_mirror_filters,
    routes_by_service_parent,
)

Precedence = tuple[int, int, int]
"""A sort key: smaller first."""

_ANY = "[^/]+"


def method_path(method: GRPCMethodMatch | None) -> StringMatcher:
    """The path matcher of a method match: Exact service and method is the exact path; a
    service alone, the prefix ``/service/``; a method alone, any service with that method;
    RegularExpression, each part a regex (an absent part matches any name)."""
    if method is None:
        return StringMatcher("path_prefix", "/")
    if method.type == "Exact":
        if method.service and method.method:
            return StringMatcher("exact", f"/{method.service}/{method.method}")
        if method.service:
            return StringMatcher("prefix", f"/{method.service}/")
        return StringMatcher("regex", f"/{_ANY}/{method.method}")
    service = f"(?:{method.service})" if method.service else _ANY
    name = f"(?:{method.method})" if method.method else _ANY
    return StringMatcher("regex", f"/{service}/{name}")


def _match(match: GRPCRouteMatch, port: int | None, port_name: str | None) -> RouteMatch:
    kinds = {"Exact": "exact", "RegularExpression": "regex"}
    return RouteMatch(
        path=method_path(match.method),
        headers=first_of_each_name(
            (h.name.lower(), StringMatcher(kinds[h.type], h.value))  # type: ignore[arg-type]
            for h in match.headers
        ),
        port=port,
        port_name=port_name,
    )


def _precedence(match: GRPCRouteMatch) -> Precedence:
    method = match.method
    service = len(method.service or "") if method else 0
    name = len(method.method or "") if method else 0
    return (-service, -name, -len({h.name.lower() for h in match.headers}))


def _rule(
    rule: GRPCRouteRule,
    origin: ResourceRef,
    namespace: str,
    port: int | None,
    port_name: str | None,
    resolve: HostResolver,
) -> list[tuple[Precedence, HttpRoute]]:
    request_headers, response_headers, mirrors = header_and_mirror_filters(
        rule.filters, namespace, resolve
    )
    destinations = backend_destinations(rule.backend_refs, namespace, resolve)
    # One model route per match, so that routes from all rules can be ordered by precedence.
    return [
        (
            _precedence(match),
            HttpRoute(
                origin=origin,
                name=rule.name,
                matches=(_match(match, port, port_name),),
                destinations=destinations,
                mirrors=mirrors,
                request_headers=request_headers,
                response_headers=response_headers,
            ),
        )
        for match in rule.matches or [GRPCRouteMatch()]
    ]


def routes_of_grpc_route(
    route: GRPCRoute, resolve: HostResolver
) -> dict[tuple[str, bool], list[tuple[Precedence, HttpRoute]]]:
    """The routes of a GRPCRoute by (host, consumer), each with its precedence: only its
    Service parents count (GAMMA), and a consumer route applies to its own namespace's
    callers only, as for an HTTPRoute."""
    return routes_by_service_parent(
        route,
        resolve,
        lambda parent: [
            r
            for rule in route.spec.rules
            for r in _rule(
                rule, ref(route), route.namespace, parent.port, parent.section_name, resolve
            )
        ],
    )
