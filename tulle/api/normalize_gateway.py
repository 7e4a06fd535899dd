"""Normalization of Gateway API HTTPRoutes (GAMMA: Service parents) into the same
:class:`~tulle.api.model.HttpRoute` a VirtualService makes, with Gateway API match precedence."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from tulle.api.kinds import HTTPRoute
from tulle.api.kinds import gateway as gw
from tulle.api.kinds.grpc_route import GRPCBackendRef, GRPCRoute, GRPCRouteFilter
from tulle.api.model import (
    CorsPolicy,
    HeaderEdits,
    HttpRoute,
    Mirror,
    Redirect,
    ResourceRef,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    StringMatcher,
    WeightedDestination,
)
from tulle.api.normalize_common import HostResolver, ref, seconds
from tulle.api.normalize_cors import gateway_cors

# --- Gateway API HTTPRoute ------------------------------------------------------------------

_Route = TypeVar("_Route")

_PATH_KINDS = {"Exact": "exact", "PathPrefix": "path_prefix", "RegularExpression": "regex"}
_VALUE_KINDS = {"Exact": "exact", "RegularExpression": "regex"}


def _gateway_match(match: gw.HTTPRouteMatch, port: int | None, port_name: str | None) -> RouteMatch:
    path = match.path or gw.PathMatch()
    return RouteMatch(
        path=StringMatcher(_PATH_KINDS[path.type], path.value),  # type: ignore[arg-type]
        method=StringMatcher("exact", match.method) if match.method else None,
        headers=first_of_each_name(
            (h.name.lower(), StringMatcher(_VALUE_KINDS[h.type], h.value))  # type: ignore[arg-type]
            for h in match.headers
        ),
        query_params=first_of_each_name(
            (q.name, StringMatcher(_VALUE_KINDS[q.type], q.value))  # type: ignore[arg-type]
            for q in match.query_params
        ),
        port=port,
        port_name=port_name,
    )


def first_of_each_name(
    pairs: Iterable[tuple[str, StringMatcher]],
) -> tuple[tuple[str, StringMatcher], ...]:
    """Header or query-parameter matches sorted by name, the first of each name only: "if
    multiple entries specify equivalent names, only the first entry with an equivalent name
    MUST be considered" (Gateway API, HTTPHeaderMatch and HTTPQueryParamMatch). Sorting the
    pairs whole compared two matchers of one name (translator fuzzing: a TypeError)."""
    first: dict[str, StringMatcher] = {}
    for name, matcher in pairs:
        first.setdefault(name, matcher)
    return tuple(sorted(first.items(), key=lambda pair: pair[0]))


def gateway_precedence(match: RouteMatch) -> tuple[int, int, int, int, int]:
    """Gateway API match precedence, as a sort key (smaller first)."""
    path = match.path or StringMatcher("path_prefix", "/")
    exact = 0 if path.kind == "exact" else 1
    return (
        exact,
        -len(path.value),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
    )


def header_modifier(modifier: gw.HeaderModifier | None) -> HeaderEdits:
    """A Gateway API header modifier as the model's header edits."""
    if modifier is None:
        return HeaderEdits()
    return HeaderEdits(
        set=tuple(sorted((h.name.lower(), h.value) for h in modifier.set)),
        add=tuple(sorted((h.name.lower(), h.value) for h in modifier.add)),
        remove=tuple(sorted(name.lower() for name in modifier.remove)),
    )


def _path_change(modifier: gw.PathModifier | None) -> tuple[str | None, str | None]:
    """(whole path, prefix) replacements of a path modifier."""
    if modifier is None:
        return None, None
    return modifier.replace_full_path, modifier.replace_prefix_match


def backend_host(
    name: str, namespace: str | None, route_namespace: str, resolve: HostResolver
) -> str:
    """The host of a Service reference (its namespace defaults to the route's)."""
    return resolve(name, namespace or route_namespace)


def reference_host(
    reference: gw.ServiceReference | gw.ParentReference,
    route_namespace: str,
    resolve: HostResolver,
) -> str:
    """The host a backendRef or a (mesh) parentRef names: a Service's
    (:func:`backend_host`), or a ServiceImport's ``<name>.<namespace>.svc.clusterset.local``,
    the multi-cluster service's host (KEP-1645) as Istio names it."""
    namespace = reference.namespace or route_namespace
    if reference.is_service_import:
        return f"{reference.name}.{namespace}.svc.clusterset.local"
    return backend_host(reference.name, reference.namespace, route_namespace, resolve)


def mirror_of(m: gw.RequestMirror, namespace: str, resolve: HostResolver) -> Mirror:
    """A RequestMirror filter as the model's mirror (``fraction`` or ``percent``, else all)."""
    if m.fraction is not None:
        percent = 100.0 * m.fraction.numerator / m.fraction.denominator
    else:
        percent = float(m.percent if m.percent is not None else 100)
    host = reference_host(m.backend_ref, namespace, resolve)
    return Mirror(host, None, m.backend_ref.port, percent)


def header_and_mirror_filters(
    filters: Sequence[gw.HTTPRouteFilter | GRPCRouteFilter], namespace: str, resolve: HostResolver
) -> tuple[HeaderEdits, HeaderEdits, tuple[Mirror, ...]]:
    """The request and response header edits (of the last RequestHeaderModifier and
    ResponseHeaderModifier) and the mirrors (each RequestMirror, in order) of a route rule's
    ``filters``."""
    request_headers = response_headers = HeaderEdits()
    mirrors: list[Mirror] = []
    for f in filters:
        if f.request_header_modifier is not None:
            request_headers = header_modifier(f.request_header_modifier)
        if f.response_header_modifier is not None:
            response_headers = header_modifier(f.response_header_modifier)
        if f.request_mirror is not None:
            mirrors.append(mirror_of(f.request_mirror, namespace, resolve))
    return request_headers, response_headers, tuple(mirrors)


def backend_destinations(
    backend_refs: Sequence[gw.HTTPBackendRef | GRPCBackendRef],
    namespace: str,
    resolve: HostResolver,
) -> tuple[WeightedDestination, ...]:
    """An HTTPRoute's or GRPCRoute's rule's backendRefs as weighted destinations, each with the
    header edits of its own (first) RequestHeaderModifier and ResponseHeaderModifier filters."""
    return tuple(
        WeightedDestination(
            host=reference_host(b, namespace, resolve),
            port=b.port,
            weight=b.weight,
            request_headers=header_modifier(
                next(
                    (f.request_header_modifier for f in b.filters if f.request_header_modifier),
                    None,
                )
            ),
            response_headers=header_modifier(
                next(
                    (f.response_header_modifier for f in b.filters if f.response_header_modifier),
                    None,
                )
            ),
        )
        for b in backend_refs
    )


def routes_by_service_parent(
    route: HTTPRoute | GRPCRoute,
    resolve: HostResolver,
    routes_for: Callable[[gw.ParentReference], list[_Route]],
) -> dict[tuple[str, bool], list[_Route]]:
    """A route's model routes (``routes_for`` each parent) by (host, consumer): only its Service
    parents count (GAMMA; the checks report the others). A consumer route (the route's namespace
    is not its Service's) applies to callers in the route's namespace only (Gateway API, GAMMA:
    "Route types: producer and consumer routes")."""
    by_host: dict[tuple[str, bool], list[_Route]] = {}
    for parent in route.spec.parent_refs:
        if not parent.is_service:
            continue
        host = reference_host(parent, route.namespace, resolve)
        consumer = (parent.namespace or route.namespace) != route.namespace
        by_host.setdefault((host, consumer), []).extend(routes_for(parent))
    return by_host


def _gateway_rule(
    rule: gw.HTTPRouteRule,
    origin: ResourceRef,
    namespace: str,
    parent: gw.ParentReference,
    resolve: HostResolver,
) -> list[HttpRoute]:
    request_headers, response_headers, mirrors = header_and_mirror_filters(
        rule.filters, namespace, resolve
    )
    redirect = rewrite = None
    cors: CorsPolicy | None = None
    for f in rule.filters:
        if f.request_redirect is not None:
            r = f.request_redirect
            path, prefix = _path_change(r.path)
            redirect = Redirect(
                r.status_code, r.scheme, r.hostname, r.port, path, prefix, derive_port=True
            )
        if f.url_rewrite is not None:
            path, prefix = _path_change(f.url_rewrite.path)
            rewrite = Rewrite(prefix=prefix, path=path, authority=f.url_rewrite.hostname)
        if f.cors is not None:
            cors = gateway_cors(f.cors)
    destinations = backend_destinations(rule.backend_refs, namespace, resolve)
    timeout = per_try = None
    if rule.timeouts is not None:
        timeout = seconds(rule.timeouts.request)
        per_try = seconds(rule.timeouts.backend_request)
    matches = rule.matches or [gw.HTTPRouteMatch()]
    # One model route per match, so that routes from all rules can be ordered by precedence.
    return [
        HttpRoute(
            origin=origin,
            name=rule.name,
            matches=(_gateway_match(match, parent.port, parent.section_name),),
            destinations=destinations,
            redirect=redirect,
            rewrite=rewrite,
            timeout=timeout or None,
            retries=RetryPolicy(per_try_timeout=per_try or None),
            mirrors=mirrors,
            request_headers=request_headers,
            response_headers=response_headers,
            cors=cors,
        )
        for match in matches
    ]


def routes_of_http_route(
    route: HTTPRoute, resolve: HostResolver
) -> dict[tuple[str, bool], list[HttpRoute]]:
    """The routes of an HTTPRoute by (host, consumer): only its Service parents count (GAMMA;
    the checks report the others). A consumer route (the route's namespace is not its
    Service's) applies to callers in the route's namespace only (Gateway API, GAMMA: "Route
    types: producer and consumer routes")."""
    return routes_by_service_parent(
        route,
        resolve,
        lambda parent: [
            r
            for rule in route.spec.rules
            for r in _gateway_rule(rule, ref(route), route.namespace, parent, resolve)
        ],
    )
