"""Normalization: validated resources → one immutable :class:`~tulle.api.model.MeshModel`.

Pure functions. Hosts are resolved against each resource's namespace, Istio's defaults are filled
in, and VirtualService and Gateway API HTTPRoute rules become the same :class:`HttpRoute`."""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from tulle.api.kinds import (
    AuthorizationPolicy,
    DestinationRule,
    Fallback,
    GRPCRoute,
    HTTPRoute,
    KubernetesService,
    Mesh,
    PeerAuthentication,
    RateLimit,
    Resource,
    ServiceEntry,
    VirtualService,
    Workload,
)
from tulle.api.model import (
    HttpRoute,
    MeshModel,
    ScopedRoutes,
    TcpRoute,
)
from tulle.api.normalize_common import (
    HostResolver,
    export_namespaces,
    namespaces_of,
    pairs,
    ref,
    workload_labels,
)
from tulle.api.normalize_delegate import delegates_of, root_routes
from tulle.api.normalize_destinations import destination_policies
from tulle.api.normalize_gateway import gateway_precedence, routes_of_http_route
from tulle.api.normalize_grpc import Precedence, routes_of_grpc_route
from tulle.api.normalize_policies import (
    authorization_rule,
    fallback_policy,
    mesh_settings,
    peer_authentication_policy,
    rate_limit_policy,
)
from tulle.api.normalize_routes import tcp_route
from tulle.api.normalize_services import kubernetes_service, mesh_services, workload_model

__all__ = [
    "HostResolver",
    "build_model",
    "export_namespaces",
    "kubernetes_service",
    "namespaces_of",
    "pairs",
    "ref",
    "workload_labels",
]


def _of_kind(resources: Iterable[Resource], kind: type[Any]) -> list[Any]:
    return [r for r in resources if isinstance(r, kind)]


def build_model(resources: Iterable[Resource]) -> MeshModel:
    """The mesh model of ``resources`` (which must be valid: see :func:`tulle.api.validate`).

    Order matters only where Istio's does: routes of a VirtualService keep their order; for a
    host routed twice, the first resource wins (validation reports the conflict)."""
    items = list(resources)
    resolve = HostResolver(namespaces_of(items))
    workloads = [workload_model(w, resolve) for w in _of_kind(items, Workload)]
    http_routes: dict[str, tuple[HttpRoute, ...]] = {}
    tcp_routes: dict[str, tuple[TcpRoute, ...]] = {}
    scoped_routes: dict[str, list[ScopedRoutes]] = {}
    services = _of_kind(items, VirtualService)
    delegates = delegates_of(services)
    for vs in services:
        if vs.spec.is_delegate:
            continue  # its routes apply only where a root's delegate names it
        origin = ref(vs)
        http = root_routes(vs, delegates, origin, resolve)
        tcp = tuple(tcp_route(r, origin, vs.namespace, resolve) for r in vs.spec.tcp)
        seen_in = export_namespaces(vs.spec.export_to, vs.namespace)
        for host in vs.spec.hosts:
            name = resolve(host, vs.namespace)
            if seen_in is not None:
                scoped = ScopedRoutes(vs.namespace, seen_in, http, tcp)
                scoped_routes.setdefault(name, []).append(scoped)
                continue
            if http:
                http_routes.setdefault(name, http)
            if tcp:
                tcp_routes.setdefault(name, tcp)
    gateway_routes: dict[tuple[str, str | None], list[HttpRoute]] = {}
    for route in _of_kind(items, HTTPRoute):
        for (host, consumer), routes in routes_of_http_route(route, resolve).items():
            key = (host, route.namespace if consumer else None)
            gateway_routes.setdefault(key, []).extend(routes)
    grpc_routes: dict[tuple[str, str | None], list[tuple[Precedence, HttpRoute]]] = {}
    for grpc_route in _of_kind(items, GRPCRoute):
        for (host, consumer), keyed in routes_of_grpc_route(grpc_route, resolve).items():
            key = (host, grpc_route.namespace if consumer else None)
            grpc_routes.setdefault(key, []).extend(keyed)
    ordered_routes = [
        (key, tuple(sorted(routes, key=lambda r: gateway_precedence(r.matches[0]))))
        for key, routes in gateway_routes.items()
    ]
    # GRPCRoute rules are not merged with an HTTPRoute's (Gateway API): the checks refuse both
    # on one Service, and the first written wins here.
    ordered_routes += [
        (key, tuple(r for _, r in sorted(keyed, key=lambda pair: pair[0])))
        for key, keyed in grpc_routes.items()
    ]
    for (host, consumer_namespace), ordered in ordered_routes:
        if consumer_namespace is None:
            http_routes.setdefault(host, ordered)
        else:
            scoped = ScopedRoutes(consumer_namespace, frozenset({consumer_namespace}), ordered)
            scoped_routes.setdefault(host, []).append(scoped)
    policies, scoped_policies, selected_policies = destination_policies(
        _of_kind(items, DestinationRule), resolve
    )
    return MeshModel(
        settings=mesh_settings(_of_kind(items, Mesh)),
        services=MappingProxyType(
            mesh_services(
                workloads,
                _of_kind(items, KubernetesService),
                _of_kind(items, ServiceEntry),
                resolve,
            )
        ),
        workloads=tuple(workloads),
        http_routes=MappingProxyType(http_routes),
        tcp_routes=MappingProxyType(tcp_routes),
        destination_policies=MappingProxyType(policies),
        peer_authentications=tuple(
            peer_authentication_policy(p) for p in _of_kind(items, PeerAuthentication)
        ),
        authorization_policies=tuple(
            authorization_rule(p) for p in _of_kind(items, AuthorizationPolicy)
        ),
        rate_limits=tuple(rate_limit_policy(r, resolve) for r in _of_kind(items, RateLimit)),
        fallbacks=tuple(fallback_policy(f, resolve) for f in _of_kind(items, Fallback)),
        scoped_routes=MappingProxyType({h: tuple(s) for h, s in scoped_routes.items()}),
        selected_policies=MappingProxyType({h: tuple(p) for h, p in selected_policies.items()}),
        scoped_policies=MappingProxyType({h: tuple(s) for h, s in scoped_policies.items()}),
    )
