"""Normalization of Istio VirtualService rules: HTTP and TCP routes, with their matches,
destinations, header edits, retries, faults, redirects, rewrites and mirrors, as the model's
:class:`~tulle.api.model.HttpRoute` and :class:`~tulle.api.model.TcpRoute`."""

from __future__ import annotations

from collections.abc import Mapping

from tulle.api.durations import parse_duration
from tulle.api.kinds import networking as net
from tulle.api.kinds.base import StringMatch
from tulle.api.model import (
    DEFAULT_RETRY_ON,
    FaultPolicy,
    HeaderEdits,
    HttpRoute,
    Mirror,
    Redirect,
    ResourceRef,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    StringMatcher,
    TcpMatch,
    TcpRoute,
    WeightedDestination,
)
from tulle.api.normalize_common import HostResolver, pairs, seconds
from tulle.api.normalize_cors import istio_cors

# --- VirtualService -------------------------------------------------------------------------


def _matcher(match: StringMatch | None, ignore_case: bool = False) -> StringMatcher | None:
    if match is None:
        return None
    if match.exact is not None:
        return StringMatcher("exact", match.exact, ignore_case)
    if match.prefix is not None:
        return StringMatcher("prefix", match.prefix, ignore_case)
    if match.regex is not None:
        return StringMatcher("regex", match.regex, ignore_case)
    return StringMatcher("present")


def _named_matchers(
    matches: Mapping[str, StringMatch], lower: bool = True
) -> tuple[tuple[str, StringMatcher], ...]:
    result = []
    for name, match in sorted(matches.items()):
        matcher = _matcher(match)
        assert matcher is not None
        result.append((name.lower() if lower else name, matcher))
    return tuple(result)


def route_match(match: net.HTTPMatchRequest) -> RouteMatch:
    """A VirtualService match as the model's."""
    return RouteMatch(
        path=_matcher(match.uri, match.ignore_uri_case),
        method=_matcher(match.method),
        authority=_matcher(match.authority),
        headers=_named_matchers(match.headers),
        without_headers=_named_matchers(match.without_headers),
        query_params=_named_matchers(match.query_params, lower=False),
        port=match.port,
        source_labels=pairs(match.source_labels),
    )


def _edits(operations: net.HeaderOperations | None) -> HeaderEdits:
    if operations is None:
        return HeaderEdits()
    return HeaderEdits(
        set=pairs(operations.set, lower=True),
        add=pairs(operations.add, lower=True),
        remove=tuple(sorted(name.lower() for name in operations.remove)),
    )


def _destination(
    destination: net.Destination, weight: int, namespace: str, resolve: HostResolver
) -> WeightedDestination:
    return WeightedDestination(
        host=resolve(destination.host, namespace),
        subset=destination.subset,
        port=destination.port.number if destination.port else None,
        weight=weight,
    )


def _retries(retries: net.HTTPRetry | None, per_try: float | None = None) -> RetryPolicy:
    if retries is None:
        return RetryPolicy(per_try_timeout=per_try)
    conditions = [c.strip() for c in (retries.retry_on or "").split(",") if c.strip()]
    codes = tuple(int(c) for c in conditions if c.isdigit())
    named = tuple(c for c in conditions if not c.isdigit())
    if codes and "retriable-status-codes" not in named:
        named = (*named, "retriable-status-codes")
    if not conditions:
        named, codes = DEFAULT_RETRY_ON, (503,)
    return RetryPolicy(
        attempts=retries.attempts,
        per_try_timeout=seconds(retries.per_try_timeout),
        retry_on=named,
        retriable_status_codes=codes,
    )


def _fault(fault: net.HTTPFaultInjection | None) -> FaultPolicy | None:
    if fault is None:
        return None
    delay, abort = fault.delay, fault.abort
    return FaultPolicy(
        delay=parse_duration(delay.fixed_delay) if delay else None,
        delay_percent=delay.percentage.value if delay and delay.percentage else 100.0,
        abort_http_status=abort.http_status if abort else None,
        abort_grpc_status=abort.grpc_status if abort else None,
        abort_percent=abort.percentage.value if abort and abort.percentage else 100.0,
    )


def virtual_service_route(
    route: net.HTTPRoute, origin: ResourceRef, namespace: str, resolve: HostResolver
) -> HttpRoute:
    """One VirtualService HTTP route as the model's route (a lone destination weighs 100)."""
    single = len(route.route) == 1
    destinations = tuple(
        WeightedDestination(
            host=resolve(d.destination.host, namespace),
            subset=d.destination.subset,
            port=d.destination.port.number if d.destination.port else None,
            weight=d.weight if d.weight is not None else (100 if single else 0),
            request_headers=_edits(d.headers.request if d.headers else None),
            response_headers=_edits(d.headers.response if d.headers else None),
        )
        for d in route.route
    )
    redirect = None
    if route.redirect is not None:
        r = route.redirect
        redirect = Redirect(
            status=r.redirect_code,
            scheme=r.scheme,
            authority=r.authority,
            port=r.port,
            path=r.uri,
            prefix=r.prefix_rewrite,
        )
    rewrite = None
    if route.rewrite is not None:
        rewrite = Rewrite(prefix=route.rewrite.uri, authority=route.rewrite.authority)
    mirrors: tuple[Mirror, ...] = ()
    if route.mirror is not None:
        target = _destination(route.mirror, 0, namespace, resolve)
        percent = route.mirror_percentage.value if route.mirror_percentage else 100.0
        mirrors = (Mirror(target.host, target.subset, target.port, percent),)
    return HttpRoute(
        origin=origin,
        name=route.name,
        matches=tuple(route_match(m) for m in route.match),
        destinations=destinations,
        redirect=redirect,
        rewrite=rewrite,
        timeout=seconds(route.timeout),
        retries=_retries(route.retries),
        fault=_fault(route.fault),
        mirrors=mirrors,
        request_headers=_edits(route.headers.request if route.headers else None),
        response_headers=_edits(route.headers.response if route.headers else None),
        cors=istio_cors(route.cors_policy) if route.cors_policy is not None else None,
    )


def tcp_route(
    route: net.TCPRoute, origin: ResourceRef, namespace: str, resolve: HostResolver
) -> TcpRoute:
    """One VirtualService TCP route as the model's route."""
    single = len(route.route) == 1
    return TcpRoute(
        origin=origin,
        matches=tuple(
            TcpMatch(m.port, tuple(m.destination_subnets), pairs(m.source_labels))
            for m in route.match
        ),
        destinations=tuple(
            _destination(
                d.destination,
                d.weight if d.weight is not None else (100 if single else 0),
                namespace,
                resolve,
            )
            for d in route.route
        ),
    )
