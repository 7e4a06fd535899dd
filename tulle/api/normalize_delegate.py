"""VirtualService delegation as Istio merges it (``mergeVirtualServicesIfNeeded``): a root
VirtualService's HTTP route with ``delegate`` stands for the delegate VirtualService's routes
(one with no ``hosts``), each restricted to the root route's matches and taking the root's
fields it does not set itself.

Istio merges before choosing what applies where, so delegation holds for sidecars (``mesh``)
as for gateways. What Istio does with a delegation that cannot work, Tulle does too, and the
validator says it: a missing delegate, or one not exported to the root's namespace, drops that
root route; a delegate route whose match is not within any of the root route's matches is
dropped."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tulle.api.kinds import VirtualService
from tulle.api.kinds import networking as net
from tulle.api.kinds.base import StringMatch
from tulle.api.kinds.virtual_service import Delegate
from tulle.api.model import HttpRoute, ResourceRef
from tulle.api.normalize_common import HostResolver, export_namespaces
from tulle.api.normalize_routes import virtual_service_route

Delegates = Mapping[tuple[str, str], VirtualService]
"""Delegate VirtualServices (no hosts) by (namespace, name)."""


def delegates_of(services: list[VirtualService]) -> dict[tuple[str, str], VirtualService]:
    """The delegate VirtualServices among ``services``, by (namespace, name)."""
    return {(vs.namespace, vs.name): vs for vs in services if vs.spec.is_delegate}


@dataclass(frozen=True)
class Dropped:
    """What Istio leaves out of a root VirtualService, and why: the root route (``delegate``
    None) or one route of its delegate."""

    route: int
    delegate_route: int | None
    reason: str


def _conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    """Istio's ``stringMatchConflict``: whether ``leaf`` may match what ``root`` does not."""
    if root is None or leaf is None:
        return False
    if root.regex or leaf.regex:
        return True
    if root.exact:
        return bool(leaf.prefix) or leaf.exact != root.exact
    if root.prefix:
        if leaf.prefix:
            return not leaf.prefix.startswith(root.prefix)
        if leaf.exact:
            return not leaf.exact.startswith(root.prefix)
    return True


def _within(root: net.HTTPMatchRequest, leaf: net.HTTPMatchRequest) -> bool:
    """Istio's ``hasConflict``, negated: ``leaf`` asks for no more than ``root`` allows."""
    pairs = [(root.uri, leaf.uri), (root.method, leaf.method), (root.authority, leaf.authority)]
    pairs += [(root.headers.get(k), v) for k, v in leaf.headers.items()]
    pairs += [(root.without_headers.get(k), v) for k, v in leaf.without_headers.items()]
    pairs += [(root.query_params.get(k), v) for k, v in leaf.query_params.items()]
    if any(_conflict(r, leaf_match) for r, leaf_match in pairs):
        return False
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return False
    if root.port and leaf.port and root.port != leaf.port:
        return False
    return all(root.source_labels.get(k, v) == v for k, v in leaf.source_labels.items())


def _merge_match(root: net.HTTPMatchRequest, leaf: net.HTTPMatchRequest) -> net.HTTPMatchRequest:
    """Istio's ``mergeHTTPMatchRequest``: the leaf's conditions, the root's where it has none."""
    return leaf.model_copy(
        update={
            "uri": leaf.uri or root.uri,
            "method": leaf.method or root.method,
            "authority": leaf.authority or root.authority,
            "headers": {**root.headers, **leaf.headers},
            "without_headers": {**root.without_headers, **leaf.without_headers},
            "query_params": {**root.query_params, **leaf.query_params},
            "port": leaf.port or root.port,
            "source_labels": {**root.source_labels, **leaf.source_labels},
        }
    )


def merge_matches(
    root: list[net.HTTPMatchRequest], leaf: list[net.HTTPMatchRequest]
) -> list[net.HTTPMatchRequest] | None:
    """The matches of a delegate route within a root route's (None: a conflict, the delegate
    route is dropped). Each leaf match is merged with every root match it lies within."""
    if not root:
        return leaf
    if not leaf:
        return root
    merged = []
    for one in leaf:
        found = [_merge_match(r, one) for r in root if _within(r, one)]
        if not found:
            return None
        merged.extend(found)
    return merged


def _inherit(root: net.HTTPRoute, leaf: net.HTTPRoute) -> net.HTTPRoute:
    """Istio's ``mergeHTTPRoute`` for the fields: the delegate's, else the root's."""
    name = leaf.name or root.name
    if leaf.name and root.name:
        name = f"{root.name}-{leaf.name}"
    update: dict[str, object] = {"name": name}
    for field in ("rewrite", "timeout", "retries", "fault", "mirror", "cors_policy", "headers"):
        if getattr(leaf, field) is None:
            update[field] = getattr(root, field)
    if leaf.mirror_percentage is None:
        update["mirror_percentage"] = root.mirror_percentage
    return leaf.model_copy(update=update)


def _find(vs: VirtualService, delegate: Delegate, delegates: Delegates) -> VirtualService | str:
    namespace = delegate.namespace or vs.namespace
    found = delegates.get((namespace, delegate.name))
    if found is None:
        return f"delegate VirtualService {namespace}/{delegate.name} not found (one with no hosts)"
    seen_in = export_namespaces(found.spec.export_to, found.namespace)
    if seen_in is not None and vs.namespace not in seen_in:
        return (
            f"delegate VirtualService {namespace}/{delegate.name} is not exported to {vs.namespace}"
        )
    return found


def expand(
    vs: VirtualService, delegates: Delegates
) -> Iterator[tuple[net.HTTPRoute, VirtualService] | Dropped]:
    """The HTTP routes of ``vs`` with its delegations merged in, each with the VirtualService
    it comes from (whose namespace its hosts are resolved in), or what Istio drops."""
    for index, route in enumerate(vs.spec.http):
        if route.delegate is None:
            yield route, vs
            continue
        found = _find(vs, route.delegate, delegates)
        if isinstance(found, str):
            yield Dropped(index, None, f"{found}: Istio ignores this route")
            continue
        for j, leaf in enumerate(found.spec.http):
            matches = merge_matches(route.match, leaf.match)
            if matches is None:
                yield Dropped(
                    index,
                    j,
                    f"the match of {found.ref} http[{j}] is not within this route's matches: "
                    "Istio ignores that route",
                )
                continue
            yield _inherit(route, leaf).model_copy(update={"match": matches}), found


def root_routes(
    vs: VirtualService, delegates: Delegates, origin: ResourceRef, resolve: HostResolver
) -> tuple[HttpRoute, ...]:
    """The model routes of ``vs``, delegations merged (hosts of a delegate's routes resolved
    in the delegate's namespace; the root's inherited ones in the root's)."""
    routes = []
    for item in expand(vs, delegates):
        if isinstance(item, Dropped):
            continue
        route, source = item
        model = virtual_service_route(route, origin, source.namespace, resolve)
        if source is not vs:
            model = _resolve_inherited(model, route, vs, resolve)
        routes.append(model)
    return tuple(routes)


def _resolve_inherited(
    model: HttpRoute, route: net.HTTPRoute, root: VirtualService, resolve: HostResolver
) -> HttpRoute:
    """A mirror the delegate route took from its root names a host of the root's namespace."""
    inherited = [r for r in root.spec.http if r.mirror is route.mirror and r.mirror is not None]
    if not inherited:
        return model
    mirrors = virtual_service_route(inherited[0], model.origin, root.namespace, resolve).mirrors
    return dataclasses.replace(model, mirrors=mirrors)
