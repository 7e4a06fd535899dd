"""Cross-resource checks: problems no single resource shows on its own.

Each check takes the loaded resources (with their documents, for lines) and returns findings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tulle.api.check_context import UNDEFINED, Context
from tulle.api.check_context import located as _located
from tulle.api.checks_deprecated import check_deprecated_spellings
from tulle.api.checks_destinations import check_warmup, check_workload_selectors
from tulle.api.checks_locality import check_locality_failover, check_zone_aware_enabled
from tulle.api.checks_routes import (
    check_delegations,
    check_http_routes,
    check_routed_once,
    gamma_routes,
    route_names,
    route_scope,
)
from tulle.api.checks_sans import check_subject_alt_names
from tulle.api.checks_services import check_kubernetes_services
from tulle.api.findings import Finding, Severity
from tulle.api.hosts import host_matches
from tulle.api.kinds import (
    DestinationRule,
    Fallback,
    Mesh,
    PeerAuthentication,
    RateLimit,
    ServiceEntry,
    VirtualService,
    Workload,
)
from tulle.api.loader import Loaded
from tulle.api.normalize import workload_labels
from tulle.api.normalize_gateway import reference_host
from tulle.api.source import FieldPath

ERROR, WARNING = Severity.ERROR, Severity.WARNING


def check_single_mesh(ctx: Context) -> Iterator[Finding]:
    """At most one Mesh resource."""
    meshes = [item for _, item in ctx.of(Mesh)]
    for item in meshes[1:]:
        yield item.finding(
            ERROR,
            ("metadata", "name"),
            f"only one Mesh is allowed; the first is at {_located(meshes[0])}",
        )


def _check_destination(
    ctx: Context, item: Loaded, path: FieldPath, host: str, subset: str | None
) -> Iterator[Finding]:
    full = ctx.resolve(host, item.resource.namespace)
    if not ctx.is_known(full):
        shown = host if host == full else f"{host} ({full})"
        yield ctx.undefined(item, (*path, "host"), f"host {shown}")
    elif subset is not None and subset not in ctx.subsets.get(full, set()):
        defined = sorted(ctx.subsets.get(full, set()))
        message = f"subset {subset!r} of {full} is not defined"
        if defined:
            yield item.finding(
                ERROR, (*path, "subset"), f"{message} (defined: {', '.join(defined)})"
            )
        elif ctx.strict_hosts:
            yield item.finding(ERROR, (*path, "subset"), f"{message} (no DestinationRule for it)")
        else:  # its DestinationRule, like its host, may be elsewhere
            yield item.finding(
                WARNING,
                (*path, "subset"),
                f"{message} (no DestinationRule for it in these files: one must exist elsewhere "
                "for this config to apply)",
            )


def _check_weights(item: Loaded, path: FieldPath, weights: list[int | None]) -> Iterator[Finding]:
    """Weights are relative: each destination gets ``weight / sum of weights`` of the traffic;
    only a total of 0 is refused (Istio's VirtualService reference, HTTPRouteDestination
    ``weight``; istio pkg/config/validation: "total destination weight = 0")."""
    if len(weights) < 2:
        return
    if sum(w or 0 for w in weights) == 0:
        yield item.finding(
            ERROR, path, "weights add up to 0: give at least one destination a weight"
        )


def check_virtual_services(ctx: Context) -> Iterator[Finding]:
    """Destinations exist, subsets are defined, weights add up, no route is shadowed."""
    for vs, item in ctx.of(VirtualService):
        for i, route in enumerate(vs.spec.http):
            base: FieldPath = ("spec", "http", i)
            for j, dest in enumerate(route.route):
                d = dest.destination
                yield from _check_destination(
                    ctx, item, (*base, "route", j, "destination"), d.host, d.subset
                )
            if route.route:
                yield from _check_weights(item, (*base, "route"), [d.weight for d in route.route])
            if route.mirror is not None:
                m = route.mirror
                yield from _check_destination(ctx, item, (*base, "mirror"), m.host, m.subset)
        yield from _check_shadowed(item, vs)
        for i, tcp in enumerate(vs.spec.tcp):
            base = ("spec", "tcp", i)
            for j, tcp_dest in enumerate(tcp.route):
                d = tcp_dest.destination
                yield from _check_destination(
                    ctx, item, (*base, "route", j, "destination"), d.host, d.subset
                )
            yield from _check_weights(item, (*base, "route"), [t.weight for t in tcp.route])


def _is_catch_all(route: Any) -> bool:
    if not route.match:
        return True
    for match in route.match:
        data = match.model_dump(exclude_defaults=True, by_alias=True)
        data.pop("name", None)
        uri = data.pop("uri", None)
        if not data and (uri is None or uri == {"prefix": "/"}):
            return True
    return False


def _check_shadowed(item: Loaded, vs: VirtualService) -> Iterator[Finding]:
    for i, route in enumerate(vs.spec.http[:-1]):
        if _is_catch_all(route):
            for j in range(i + 1, len(vs.spec.http)):
                yield item.finding(
                    WARNING,
                    ("spec", "http", j),
                    f"never used: spec.http[{i}] above matches every request first",
                )
            return


def check_services_defined_once(ctx: Context) -> Iterator[Finding]:
    """A ServiceEntry host that a Workload's service or a Kubernetes Service already defines
    would replace that service's ports and endpoints, silently: refused. (Several Workloads of
    one service are its versions: their ports are merged.) Several ServiceEntries of one host
    are merged as Istio merges them: the first one's ports, resolution, location and addresses
    stand, every one's endpoints serve: a WARNING says so."""
    defined: dict[str, Loaded] = {}
    for workload, item in ctx.of(Workload):
        defined.setdefault(
            ctx.resolve(workload.spec.service or workload.name, workload.namespace), item
        )
    for _, mapped, item in ctx.kubernetes:
        if mapped is not None:
            defined.setdefault(mapped.host, item)
    for entry, item in ctx.of(ServiceEntry):
        for i, name in enumerate(entry.spec.hosts):
            host = ctx.resolve(name, entry.namespace)
            first = defined.setdefault(host, item)
            if first is item:
                continue
            if isinstance(first.resource, ServiceEntry):
                yield item.finding(
                    WARNING,
                    ("spec", "hosts", i),
                    f"{host} is also defined by {first.resource.ref} at {_located(first)}: "
                    "merged as Istio merges ServiceEntries of one host (the first one's ports, "
                    "resolution, location and addresses stand; this one's endpoints are added)",
                )
                continue
            yield item.finding(
                ERROR,
                ("spec", "hosts", i),
                f"{host} is already defined by {first.resource.ref} at {_located(first)}; "
                "define each service once",
            )


def check_workload_ports_agree(ctx: Context) -> Iterator[Finding]:
    """The Workloads of one service are its versions: a port number they share is one port,
    with one name and protocol (otherwise the service would have the port twice, and a route
    configuration with its domains twice, which Envoy refuses whole)."""
    first: dict[tuple[str, int], tuple[str, str, Loaded]] = {}
    for workload, item in ctx.of(Workload):
        host = ctx.resolve(workload.spec.service or workload.name, workload.namespace)
        for i, port in enumerate(workload.spec.ports):
            name, protocol = port.name, port.protocol
            seen = first.setdefault((host, port.port), (name, protocol, item))
            if seen[:2] != (name, protocol):
                yield item.finding(
                    ERROR,
                    ("spec", "ports", i),
                    f"port {port.port} of {host} is {seen[0]!r} ({seen[1]}) in "
                    f"{seen[2].resource.ref} at {_located(seen[2])}, but {name!r} ({protocol}) "
                    "here; a service's versions must agree on its ports",
                )


def check_proxyless_ports(ctx: Context) -> Iterator[Finding]:
    """A proxyless gRPC app is in the mesh on its gRPC ports only (grpcio's ``xds=True`` server
    serves gRPC): a port of another protocol is the app's own business, said so."""
    for workload, item in ctx.of(Workload):
        if workload.spec.mesh != "proxyless":
            continue
        for i, port in enumerate(workload.spec.ports):
            if port.protocol != "GRPC":
                yield item.finding(
                    WARNING,
                    ("spec", "ports", i),
                    f"port {port.name!r} ({port.protocol}) of a proxyless gRPC workload is "
                    "outside the mesh: grpcio's xds=True server serves gRPC only, so the app "
                    "serves this port itself, in plain text, with no PeerAuthentication or "
                    "AuthorizationPolicy (registered without tlsMode: istio)",
                )


def _service_ports(ctx: Context) -> dict[str, set[int]]:
    """The ports of each service the config defines (Workloads, Kubernetes Services and
    ServiceEntries)."""
    ports: dict[str, set[int]] = {}
    for workload, _ in ctx.of(Workload):
        host = ctx.resolve(workload.spec.service or workload.name, workload.namespace)
        ports.setdefault(host, set()).update(p.port for p in workload.spec.ports)
    for _, mapped, _ in ctx.kubernetes:
        if mapped is not None:
            ports.setdefault(mapped.host, set()).update(p.number for p in mapped.ports)
    for entry, _ in ctx.of(ServiceEntry):
        for name in entry.spec.hosts:
            host = ctx.resolve(name, entry.namespace)
            ports.setdefault(host, set()).update(p.number for p in entry.spec.ports)
    return ports


def check_destination_ports(ctx: Context) -> Iterator[Finding]:
    """A destination's port is one of its service's: a route to any other would name a cluster
    no proxy has, and every request it took would fail. (Services the config does not define,
    known only from the registry, are not checked.)"""
    ports = _service_ports(ctx)

    def check(
        item: Loaded, path: FieldPath, name: str, namespace: str, port: int | None
    ) -> Iterator[Finding]:
        if port is None:
            return
        host = ctx.resolve(name, namespace)
        known = {
            number for h, numbers in ports.items() if host_matches(h, host) for number in numbers
        }
        if known and port not in known:
            listed = ", ".join(str(number) for number in sorted(known))
            yield item.finding(ERROR, path, f"port {port} is not a port of {host} ({listed})")

    for vs, item in ctx.of(VirtualService):
        for i, http in enumerate(vs.spec.http):
            targets: list[tuple[FieldPath, Any]] = [
                (("route", j, "destination"), d.destination) for j, d in enumerate(http.route)
            ]
            if http.mirror is not None:
                targets.append((("mirror",), http.mirror))
            for where, d in targets:
                path: FieldPath = ("spec", "http", i, *where, "port", "number")
                yield from check(item, path, d.host, vs.namespace, _number(d.port))
        for i, tcp in enumerate(vs.spec.tcp):
            for j, t in enumerate(tcp.route):
                path = ("spec", "tcp", i, "route", j, "destination", "port", "number")
                d = t.destination
                yield from check(item, path, d.host, vs.namespace, _number(d.port))
    for route, item in gamma_routes(ctx):
        ns = route.namespace
        for i, parent in enumerate(route.spec.parent_refs):
            if not parent.is_service:
                continue
            path = ("spec", "parentRefs", i, "port")
            host = reference_host(parent, ns, ctx.resolve)
            yield from check(item, path, host, parent.namespace or ns, parent.port)
        if not any(parent.is_service for parent in route.spec.parent_refs):
            continue  # applies to no mesh traffic: its backends are never used
        rules: list[Any] = list(route.spec.rules)
        for i, rule in enumerate(rules):
            mirrors: list[tuple[FieldPath, Any]] = [
                (("filters", k), f) for k, f in enumerate(rule.filters)
            ]
            for j, backend in enumerate(rule.backend_refs):
                path = ("spec", "rules", i, "backendRefs", j, "port")
                yield from check(item, path, backend.name, backend.namespace or ns, backend.port)
                mirrors += [
                    (("backendRefs", j, "filters", k), f) for k, f in enumerate(backend.filters)
                ]
            for where, found in mirrors:
                if found.request_mirror is None:
                    continue
                ref = found.request_mirror.backend_ref
                path = ("spec", "rules", i, *where, "requestMirror", "backendRef", "port")
                yield from check(item, path, ref.name, ref.namespace or ns, ref.port)


def _number(port: Any) -> int | None:
    """A VirtualService destination's ``port: {number: N}``, if given."""
    return None if port is None else int(port.number)


def check_one_destination_rule_per_host(ctx: Context) -> Iterator[Finding]:
    """The DestinationRules of one host and scope (every namespace, or one namespace an
    exportTo restricts) are merged as Istio's ``mergeDestinationRule`` merges them, in config
    order: subsets are added unless one of that name is there, and the first top-level
    ``trafficPolicy`` wins. What the merge drops is a WARNING. Rules with a workloadSelector are
    not merged: one per host and selector (different selectors may both match a client: the
    first in config order applies, as in Istio)."""
    merged: dict[tuple[str, str], list[tuple[DestinationRule, Loaded]]] = {}
    selected: dict[tuple[str, str], Loaded] = {}
    for rule, item in ctx.of(DestinationRule):
        host = ctx.resolve(rule.spec.host, rule.namespace)
        if rule.spec.workload_selector is not None:  # its own scope: the clients it selects
            labels = sorted(rule.spec.workload_selector.match_labels.items())
            first = selected.setdefault((host, f"{rule.namespace} {labels}"), item)
            if first is not item:
                yield item.finding(
                    ERROR,
                    ("spec", "host"),
                    f"{host} already has {first.resource.ref} at {_located(first)} for the "
                    "same workloadSelector; merge the two into one",
                )
            continue
        earlier = merged.setdefault((host, route_scope(rule.namespace, rule.spec.export_to)), [])
        yield from _merge_findings(host, rule, item, earlier)
        earlier.append((rule, item))


MERGED = "Istio merges the DestinationRules of one host, adding up their subsets"


def _merge_findings(
    host: str,
    rule: DestinationRule,
    item: Loaded,
    earlier: list[tuple[DestinationRule, Loaded]],
) -> Iterator[Finding]:
    """What merging ``rule`` into the ``earlier`` rules of its host drops."""
    if rule.spec.traffic_policy is not None:
        setter = next((e for r, e in earlier if r.spec.traffic_policy is not None), None)
        if setter is not None:
            yield item.finding(
                WARNING,
                ("spec", "trafficPolicy"),
                f"ignored: {setter.resource.ref} at {_located(setter)} already sets {host}'s "
                f"trafficPolicy ({MERGED}: the first top-level trafficPolicy wins)",
            )
    for i, subset in enumerate(rule.spec.subsets):
        owner = next(
            (e for r, e in earlier if any(s.name == subset.name for s in r.spec.subsets)), None
        )
        if owner is not None:
            yield item.finding(
                WARNING,
                ("spec", "subsets", i, "name"),
                f"ignored: {owner.resource.ref} at {_located(owner)} already defines subset "
                f"{subset.name!r} of {host} ({MERGED}: the first subset of a name wins)",
            )


def check_destination_rules(ctx: Context) -> Iterator[Finding]:
    """In local mode (Workloads present), each subset's labels match some Workload of its host."""
    workloads = [workload for workload, _ in ctx.of(Workload)]
    if not workloads:
        return
    by_host: dict[str, list[dict[str, str]]] = {}
    for workload in workloads:
        host = ctx.resolve(workload.spec.service or workload.name, workload.namespace)
        by_host.setdefault(host, []).append(workload_labels(workload))
    for rule, item in ctx.of(DestinationRule):
        host = ctx.resolve(rule.spec.host, rule.namespace)
        if host not in by_host:
            if not ctx.is_known(host):
                yield item.finding(
                    WARNING,
                    ("spec", "host"),
                    f"host {host} {UNDEFINED}",
                )
            continue
        for i, subset in enumerate(rule.spec.subsets):
            wanted = subset.labels.items()
            if not any(wanted <= labels.items() for labels in by_host[host]):
                shown = ", ".join(f"{k}={v}" for k, v in sorted(subset.labels.items()))
                yield item.finding(
                    WARNING,
                    ("spec", "subsets", i, "labels"),
                    f"no Workload of {host} has labels {shown}: subset {subset.name!r} is empty",
                )


def check_peer_authentications(ctx: Context) -> Iterator[Finding]:
    """At most one PeerAuthentication applies to a workload at each level (selector or none)."""
    workloads = [workload for workload, _ in ctx.of(Workload)]
    seen: dict[tuple[str, str], Loaded] = {}
    for policy, item in ctx.of(PeerAuthentication):
        selector = policy.spec.selector
        if selector is None:
            key = (policy.namespace, "")
            if key in seen:
                yield item.finding(
                    ERROR,
                    ("metadata", "name"),
                    f"namespace {policy.namespace} already has a namespace-wide "
                    f"PeerAuthentication, {seen[key].resource.ref} at {_located(seen[key])}",
                )
            seen.setdefault(key, item)
            continue
        wanted = selector.match_labels.items()
        targets = [
            w.name
            for w in workloads
            if w.namespace == policy.namespace and wanted <= workload_labels(w).items()
        ]
        keys = [(policy.namespace, f"workload:{name}") for name in targets] or [
            (policy.namespace, "selector:" + repr(sorted(wanted)))
        ]
        for key in keys:
            if key in seen:
                what = key[1].split(":", 1)[1] if key[1].startswith("workload:") else "them"
                target = f"workload {what}" if what != "them" else "the same workloads"
                yield item.finding(
                    ERROR,
                    ("spec", "selector"),
                    f"{target} is already selected by {seen[key].resource.ref} at "
                    f"{_located(seen[key])}; one PeerAuthentication per workload",
                )
                break
        for key in keys:
            seen.setdefault(key, item)


def check_fallbacks(ctx: Context) -> Iterator[Finding]:
    """A Fallback's host and its target exist, and differ."""
    for fallback, item in ctx.of(Fallback):
        spec = fallback.spec
        host = ctx.resolve(spec.host, fallback.namespace)
        target = ctx.resolve(spec.to.host, fallback.namespace)
        for field_path, name, resolved in (
            (("spec", "host"), spec.host, host),
            (("spec", "to", "host"), spec.to.host, target),
        ):
            if not ctx.is_known(resolved):
                yield ctx.undefined(item, field_path, f"host {name} ({resolved})")
        if host == target:
            message = f"{spec.to.host} falls back to itself"
            yield item.finding(ERROR, ("spec", "to", "host"), message)


def check_rate_limits(ctx: Context) -> Iterator[Finding]:
    """A RateLimit's target host exists, and its route name is a route of that host."""
    for limit, item in ctx.of(RateLimit):
        target = limit.spec.target
        if target is None:
            continue
        host = ctx.resolve(target.host, limit.namespace)
        if not ctx.is_known(host):
            yield ctx.undefined(item, ("spec", "target", "host"), f"host {target.host} ({host})")
            continue
        if target.route is None:
            continue
        names = route_names(ctx, host)
        if target.route not in names:
            known = ", ".join(sorted(n for n in names if n)) or "none has a name"
            yield item.finding(
                ERROR,
                ("spec", "target", "route"),
                f"no route named {target.route!r} for {host} (routes: {known})",
            )


CHECKS: tuple[Callable[[Context], Iterator[Finding]], ...] = (
    check_single_mesh,
    check_virtual_services,
    check_http_routes,
    check_services_defined_once,
    check_workload_ports_agree,
    check_kubernetes_services,
    check_proxyless_ports,
    check_destination_ports,
    check_routed_once,
    check_delegations,
    check_one_destination_rule_per_host,
    check_destination_rules,
    check_locality_failover,
    check_zone_aware_enabled,
    check_warmup,
    check_workload_selectors,
    check_peer_authentications,
    check_rate_limits,
    check_fallbacks,
    check_deprecated_spellings,
    check_subject_alt_names,
)


__all__ = ["CHECKS", "Context", "cross_check"]


def cross_check(
    loaded: list[Loaded], known_hosts: Iterable[str] = (), strict_hosts: bool = False
) -> list[Finding]:
    """Every cross-resource finding for ``loaded``; ``known_hosts`` adds hosts defined elsewhere
    (the control plane's service registry, ``tulle validate --hosts-from``); ``strict_hosts``
    makes an undefined host an ERROR even without Workloads (see :mod:`check_context`)."""
    ctx = Context(loaded, known_hosts, strict_hosts)
    return [finding for check in CHECKS for finding in check(ctx)]
