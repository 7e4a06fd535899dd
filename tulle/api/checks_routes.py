"""Cross-resource checks of routes: Gateway API HTTPRoute parents and backends, and one set of
HTTP routes per host and scope.

Only ``kind: Service`` parents in the core group make a mesh (GAMMA) route; a parentRef without
``kind`` names a Gateway (Gateway API, ParentReference), an ingress route this issue does not
support. A VirtualService's ``exportTo`` and a GAMMA consumer route (an HTTPRoute in a namespace
other than its Service's) scope routes to namespaces: two route sets of one host conflict only
within one scope."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tulle.api.check_context import Context
from tulle.api.check_context import located as _located
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import (
    GRPCRoute,
    HTTPRoute,
    ServiceEntry,
    VirtualService,
    Workload,
)
from tulle.api.kinds.gateway import (
    GATEWAY_GROUP,
    MULTICLUSTER_GROUP,
    HTTPRouteRule,
    ParentReference,
)
from tulle.api.kinds.grpc_route import GRPCRouteRule
from tulle.api.loader import Loaded
from tulle.api.normalize import export_namespaces
from tulle.api.normalize_delegate import Dropped, delegates_of, expand
from tulle.api.normalize_gateway import reference_host
from tulle.api.unsupported import gateway_parent

ERROR, WARNING = Severity.ERROR, Severity.WARNING


def gamma_routes(ctx: Context) -> list[tuple[HTTPRoute | GRPCRoute, Loaded]]:
    """The Gateway API routes (HTTPRoutes, then GRPCRoutes) in load order."""
    return [*ctx.of(HTTPRoute), *ctx.of(GRPCRoute)]


def _port_names(ctx: Context) -> dict[str, dict[str, int]]:
    """The named ports of each service the config defines, by name."""
    names: dict[str, dict[str, int]] = {}
    for workload, _ in ctx.of(Workload):
        host = ctx.resolve(workload.spec.service or workload.name, workload.namespace)
        names.setdefault(host, {}).update((p.name, p.port) for p in workload.spec.ports)
    for _, mapped, _ in ctx.kubernetes:
        if mapped is not None:
            ports = names.setdefault(mapped.host, {})
            ports.update((p.name, p.number) for p in mapped.ports if p.name)
    for entry, _ in ctx.of(ServiceEntry):
        for name in entry.spec.hosts:
            ports = names.setdefault(ctx.resolve(name, entry.namespace), {})
            ports.update((p.name, p.number) for p in entry.spec.ports if p.name)
    return names


def _section(
    item: Loaded, i: int, parent: ParentReference, host: str, known: dict[str, dict[str, int]]
) -> Iterator[Finding]:
    """A Service parent's ``sectionName`` is the name of one of its ports (GAMMA), the one
    ``port`` names when both are set."""
    ports = known.get(host)
    if parent.section_name is None or not ports:
        return
    path = ("spec", "parentRefs", i, "sectionName")
    number = ports.get(parent.section_name)
    if number is None:
        listed = ", ".join(sorted(ports))
        yield item.finding(
            ERROR,
            path,
            f"{parent.section_name!r} is not a port name of Service {parent.name} ({host}): "
            f"its ports are {listed}; the route would apply to no traffic",
        )
    elif parent.port is not None and parent.port != number:
        yield item.finding(
            ERROR,
            path,
            f"port {parent.section_name!r} of {host} is {number}, not {parent.port} (port): "
            "the route would apply to no traffic",
        )


def check_http_routes(ctx: Context) -> Iterator[Finding]:
    """Parents and backends of Gateway API HTTPRoutes and GRPCRoutes exist; a parent's
    sectionName names a port of its Service."""
    port_names = _port_names(ctx) if any(True for _ in gamma_routes(ctx)) else {}
    for route, item in gamma_routes(ctx):
        if not route.spec.parent_refs:
            yield item.finding(
                WARNING,
                ("spec", "parentRefs"),
                "no parentRefs: the route attaches to nothing and applies to no traffic "
                "(name a Service with kind: Service to route the mesh's traffic to it)",
            )
        for i, parent in enumerate(route.spec.parent_refs):
            if parent.is_gateway:
                yield item.finding(WARNING, ("spec", "parentRefs", i), gateway_parent(parent.name))
                continue
            if not parent.is_service:
                group = parent.group or "core"
                hint = ""
                if parent.kind == "Service":
                    hint = f'; a parentRef\'s group defaults to {GATEWAY_GROUP}: write group: ""'
                yield item.finding(
                    ERROR,
                    ("spec", "parentRefs", i, "kind"),
                    f"parentRef kind {parent.kind} (group {group}) is not supported: Tulle "
                    'attaches routes to Services (kind: Service, group "") and ServiceImports '
                    f"(group {MULTICLUSTER_GROUP}) only{hint}",
                )
                continue
            host = reference_host(parent, route.namespace, ctx.resolve)
            if not ctx.is_known(host):
                yield ctx.undefined(
                    item, ("spec", "parentRefs", i, "name"), f"{parent.kind} {parent.name} ({host})"
                )
            yield from _section(item, i, parent, host, port_names)
        if not any(parent.is_service for parent in route.spec.parent_refs):
            continue  # applies to no mesh traffic: its backends are never used
        rules: Sequence[HTTPRouteRule | GRPCRouteRule] = route.spec.rules
        for i, rule in enumerate(rules):
            for j, backend in enumerate(rule.backend_refs):
                host = reference_host(backend, route.namespace, ctx.resolve)
                if not ctx.is_known(host):
                    yield ctx.undefined(
                        item,
                        ("spec", "rules", i, "backendRefs", j, "name"),
                        f"{backend.kind} {backend.name} ({host})",
                    )


def route_scope(namespace: str, export_to: list[str]) -> str:
    """Who sees a route: ``*`` all namespaces, else the resource's namespace (an exportTo
    other than ``*``, a consumer route): two sets of one scope would both apply."""
    return "*" if export_namespaces(export_to, namespace) is None else namespace


def check_routed_once(ctx: Context) -> Iterator[Finding]:
    """A host has HTTP routes from one VirtualService or from HTTPRoutes, never both or two,
    for one scope: the routes every namespace sees, or those of one namespace (exportTo, GAMMA
    consumer routes), which take precedence there."""
    owner: dict[tuple[str, str], Loaded] = {}
    for vs, item in ctx.of(VirtualService):
        if not vs.spec.http:
            continue
        scope = route_scope(vs.namespace, vs.spec.export_to)
        for i, name in enumerate(vs.spec.hosts):
            full = (ctx.resolve(name, vs.namespace), scope)
            if full in owner and owner[full] is not item:
                yield item.finding(
                    ERROR,
                    ("spec", "hosts", i),
                    f"{full[0]} is already routed by {owner[full].resource.ref} at "
                    f"{_located(owner[full])}; merge the rules into one",
                )
            owner.setdefault(full, item)
    for route, item in gamma_routes(ctx):
        for i, parent in enumerate(route.spec.parent_refs):
            if not parent.is_service:
                continue
            consumer = (parent.namespace or route.namespace) != route.namespace
            scope = route.namespace if consumer else "*"
            full = (reference_host(parent, route.namespace, ctx.resolve), scope)
            first = owner.get(full)
            if first is not None and isinstance(first.resource, VirtualService):
                yield item.finding(
                    ERROR,
                    ("spec", "parentRefs", i),
                    f"{full[0]} is already routed by {first.resource.ref} at "
                    f"{_located(first)}; use one API per host",
                )
            elif first is not None and type(first.resource) is not type(route):
                yield item.finding(
                    ERROR,
                    ("spec", "parentRefs", i),
                    f"{full[0]} is already routed by {first.resource.ref} at "
                    f"{_located(first)}: GRPCRoute and HTTPRoute rules are not merged (Gateway "
                    "API); route a Service with one kind",
                )
            owner.setdefault(full, item)


def route_names(ctx: Context, host: str) -> set[str | None]:
    """The names of the HTTP routes of ``host`` (a RateLimit's ``target.route`` names one):
    VirtualService routes as delegation merges them (``root-leaf``), HTTPRoute and GRPCRoute
    rules of its Service parents."""
    services = [vs for vs, _ in ctx.of(VirtualService)]
    delegates = delegates_of(services)
    names: set[str | None] = set()
    for vs in services:
        if host not in {ctx.resolve(h, vs.namespace) for h in vs.spec.hosts}:
            continue
        names.update(r[0].name for r in expand(vs, delegates) if not isinstance(r, Dropped))
    for route, _ in gamma_routes(ctx):
        parents = {
            reference_host(p, route.namespace, ctx.resolve)
            for p in route.spec.parent_refs
            if p.is_service
        }
        if host in parents:
            rules: Sequence[HTTPRouteRule | GRPCRouteRule] = route.spec.rules
            names.update(rule.name for rule in rules)
    return names


def check_delegations(ctx: Context) -> Iterator[Finding]:
    """What Istio's delegation drops, said: a root route whose delegate VirtualService is
    missing or not exported to the root's namespace, a delegate route whose match is not within
    the root route's. A delegate in these files is never missing only because it has hosts:
    then it is not a delegate at all."""
    services = [vs for vs, _ in ctx.of(VirtualService)]
    named = {
        (r.delegate.namespace or vs.namespace, r.delegate.name)
        for vs in services
        for r in vs.spec.http
        if r.delegate is not None
    }
    for vs, item in ctx.of(VirtualService):
        if vs.spec.is_delegate and (vs.namespace, vs.name) not in named:
            yield item.finding(
                WARNING,
                ("spec",),
                "no hosts: a delegate VirtualService, whose routes apply only where a root "
                "VirtualService's http route names it in delegate; none in these files does",
            )
    if not named:
        return
    delegates = delegates_of(services)
    for vs, item in ctx.of(VirtualService):
        if vs.spec.is_delegate:
            continue
        for dropped in expand(vs, delegates):
            if not isinstance(dropped, Dropped):
                continue
            reason = dropped.reason
            target = vs.spec.http[dropped.route].delegate
            assert target is not None
            found = next(
                (
                    other
                    for other in services
                    if other.name == target.name
                    and other.namespace == (target.namespace or vs.namespace)
                ),
                None,
            )
            if found is not None and not found.spec.is_delegate:
                reason = (
                    f"{found.ref} has hosts, so it is not a delegate (a delegate has no "
                    "hosts): Istio ignores this route"
                )
            path = ("spec", "http", dropped.route, "delegate")
            yield item.finding(WARNING, path, reason)
