"""Cross-resource checks of routes: Gateway API HTTPRoute parents and backends, and one set of
HTTP routes per host and scope.

Only ``kind: Service`` parents in the core group make a mesh (GAMMA) route; a parentRef without
``kind`` names a Gateway (Gateway API, ParentReference), an ingress route this issue does not
support. A VirtualService's ``exportTo`` and a GAMMA consumer route (an HTTPRoute in a namespace
other than its Service's) scope routes to namespaces: two route sets of one host conflict only
within one scope."""

from __future__ import annotations

from collections.abc import Iterator

from tulle.api.check_context import Context
from tulle.api.check_context import located as _located
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import HTTPRoute, VirtualService
from tulle.api.kinds.gateway import GATEWAY_GROUP
from tulle.api.loader import Loaded
from tulle.api.normalize import export_namespaces
from tulle.api.unsupported import gateway_parent

ERROR, WARNING = Severity.ERROR, Severity.WARNING


def check_http_routes(ctx: Context) -> Iterator[Finding]:
    """Parents and backends of Gateway API HTTPRoutes exist."""
    for route, item in ctx.of(HTTPRoute):
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
                    f'attaches HTTPRoutes to Services (kind: Service, group "") only{hint}',
                )
                continue
            if parent.section_name is not None:
                yield item.finding(
                    ERROR,
                    ("spec", "parentRefs", i, "sectionName"),
                    "sectionName on a Service parent is not supported yet (issue 19): use port",
                )
            host = ctx.resolve(parent.name, parent.namespace or route.namespace)
            if not ctx.is_known(host):
                yield ctx.undefined(
                    item, ("spec", "parentRefs", i, "name"), f"Service {parent.name} ({host})"
                )
        if not any(parent.is_service for parent in route.spec.parent_refs):
            continue  # applies to no mesh traffic: its backends are never used
        for i, rule in enumerate(route.spec.rules):
            for j, backend in enumerate(rule.backend_refs):
                host = ctx.resolve(backend.name, backend.namespace or route.namespace)
                if not ctx.is_known(host):
                    yield ctx.undefined(
                        item,
                        ("spec", "rules", i, "backendRefs", j, "name"),
                        f"Service {backend.name} ({host})",
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
    for route, item in ctx.of(HTTPRoute):
        for i, parent in enumerate(route.spec.parent_refs):
            if not parent.is_service:
                continue
            consumer = (parent.namespace or route.namespace) != route.namespace
            scope = route.namespace if consumer else "*"
            full = (ctx.resolve(parent.name, parent.namespace or route.namespace), scope)
            first = owner.get(full)
            if first is not None and isinstance(first.resource, VirtualService):
                yield item.finding(
                    ERROR,
                    ("spec", "parentRefs", i),
                    f"{full[0]} is already routed by {first.resource.ref} at "
                    f"{_located(first)}; use one API per host",
                )
            owner.setdefault(full, item)
