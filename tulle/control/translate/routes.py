"""RouteConfigurations: VirtualService / HTTPRoute semantics on Envoy's standard route fields,
with the fault filter's per-route config. One RouteConfiguration per service port (used by
proxyless gRPC and the sidecar's per-service listeners), one per port number and one for the HTTP
forward proxy (used by sidecars)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from tulle.api.kinds.networking import GRPC_STATUS_NAMES
from tulle.api.model import (
    HeaderEdits,
    HttpRoute,
    LoadBalancer,
    ResourceRef,
    RouteMatch,
    Service,
    StringMatcher,
    WeightedDestination,
)
from tulle.control.translate.context import (
    NodeView,
    Snapshot,
    client_names,
    default_port,
    http_ports,
    is_routable,
    visible_services,
)
from tulle.control.translate.cors import cors_policy
from tulle.control.translate.names import HTTP_PROXY_ROUTE, cluster_name, route_config_name
from tulle.control.translate.policy import local_rate_limit
from tulle.control.translate.protos import duration, fraction, pack, uint32
from tulle.xds.types import CORS_FILTER, FAULT_FILTER, RATELIMIT_FILTER

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def _regex(pattern: str) -> Any:
    return regex_pb2.RegexMatcher(regex=pattern)


def string_matcher(matcher: StringMatcher) -> Any:
    """A model string matcher as Envoy's StringMatcher."""
    if matcher.kind == "exact":
        return string_pb2.StringMatcher(exact=matcher.value, ignore_case=matcher.ignore_case)
    if matcher.kind == "prefix":
        return string_pb2.StringMatcher(prefix=matcher.value, ignore_case=matcher.ignore_case)
    if matcher.kind == "path_prefix":
        return string_pb2.StringMatcher(safe_regex=_regex(_segment_prefix(matcher.value)))
    return string_pb2.StringMatcher(safe_regex=_regex(matcher.value))


def _segment_prefix(value: str) -> str:
    """The Gateway API's PathPrefix (whole segments) as a full-path regex."""
    return f"{re.escape(value.rstrip('/'))}(/.*)?"


def _header_matcher(name: str, matcher: StringMatcher, invert: bool = False) -> Any:
    if matcher.kind == "present":
        return rc.HeaderMatcher(name=name, present_match=True, invert_match=invert)
    return rc.HeaderMatcher(name=name, string_match=string_matcher(matcher), invert_match=invert)


def route_match(match: RouteMatch) -> Any:
    """A model match as Envoy's RouteMatch (the path specifier always set)."""
    result = rc.RouteMatch()
    path = match.path
    if path is None:
        result.prefix = "/"
    elif path.kind == "exact":
        result.path = path.value
    elif path.kind == "prefix":
        result.prefix = path.value
    elif path.kind == "path_prefix":
        if path.value == "/":
            result.prefix = "/"
        else:
            result.safe_regex.CopyFrom(_regex(_segment_prefix(path.value)))
    else:
        result.safe_regex.CopyFrom(_regex(path.value))
    if path is not None and path.ignore_case:
        result.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=False))
    headers = []
    if match.method is not None:
        headers.append(_header_matcher(":method", match.method))
    if match.authority is not None:
        headers.append(_header_matcher(":authority", match.authority))
    headers.extend(_header_matcher(name, m) for name, m in match.headers)
    headers.extend(_header_matcher(name, m, invert=True) for name, m in match.without_headers)
    result.headers.extend(headers)
    for name, matcher in match.query_params:
        if matcher.kind == "present":
            result.query_parameters.append(rc.QueryParameterMatcher(name=name, present_match=True))
        else:
            result.query_parameters.append(
                rc.QueryParameterMatcher(name=name, string_match=string_matcher(matcher))
            )
    return result


def _header_options(edits: HeaderEdits) -> list[Any]:
    action = base_pb2.HeaderValueOption
    options = [
        action(
            header=base_pb2.HeaderValue(key=key, value=value),
            append_action=action.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for key, value in edits.set
    ]
    options.extend(
        action(
            header=base_pb2.HeaderValue(key=key, value=value),
            append_action=action.APPEND_IF_EXISTS_OR_ADD,
        )
        for key, value in edits.add
    )
    return options


def _destination_port(snapshot: Snapshot, destination: WeightedDestination, port: int) -> int:
    """The port of a destination: its own, else the route's when the service has it, else the
    destination service's first port."""
    if destination.port is not None:
        return destination.port
    service = snapshot.services.get(destination.host)
    if service is None or any(p.number == port for p in service.ports):
        return port
    return default_port(service) or port


def _hash_policies(
    snapshot: Snapshot, destination: WeightedDestination, port: int, view: NodeView
) -> list[Any]:
    policy = snapshot.model.destination_policy_for(destination.host, view.namespace, view.labels)
    if policy is None:
        return []
    balancer: LoadBalancer = policy.settings_for(destination.subset, port).load_balancer
    if balancer.policy != "RING_HASH":
        return []
    hp = rc.RouteAction.HashPolicy
    if balancer.hash_on == "header":
        return [hp(header=hp.Header(header_name=balancer.hash_key or ""))]
    if balancer.hash_on == "cookie":
        cookie = hp.Cookie(name=balancer.hash_key or "", path=balancer.cookie_path or "")
        if balancer.cookie_ttl is not None:
            cookie.ttl.CopyFrom(duration(balancer.cookie_ttl))
        return [hp(cookie=cookie)]
    if balancer.hash_on == "query_parameter":
        return [hp(query_parameter=hp.QueryParameter(name=balancer.hash_key or ""))]
    return [hp(connection_properties=hp.ConnectionProperties(source_ip=True))]


def _fault(route: HttpRoute) -> Any | None:
    fault = route.fault
    if fault is None:
        return None
    config = fault_pb2.HTTPFault()
    if fault.delay is not None:
        config.delay.CopyFrom(
            common_fault.FaultDelay(
                fixed_delay=duration(fault.delay), percentage=fraction(fault.delay_percent)
            )
        )
    if fault.abort_http_status is not None:
        config.abort.CopyFrom(
            fault_pb2.FaultAbort(
                http_status=fault.abort_http_status, percentage=fraction(fault.abort_percent)
            )
        )
    elif fault.abort_grpc_status is not None:
        config.abort.CopyFrom(
            fault_pb2.FaultAbort(
                grpc_status=GRPC_STATUS_NAMES.index(fault.abort_grpc_status),
                percentage=fraction(fault.abort_percent),
            )
        )
    return config


def _action(snapshot: Snapshot, route: HttpRoute, port: int, view: NodeView) -> Any:
    action = rc.RouteAction()
    live = [d for d in route.destinations if d.weight > 0] or list(route.destinations[:1])
    if len(live) == 1 and not live[0].request_headers and not live[0].response_headers:
        d = live[0]
        action.cluster = cluster_name(d.host, _destination_port(snapshot, d, port), d.subset)
    else:
        for d in live:
            weight = rc.WeightedCluster.ClusterWeight(
                name=cluster_name(d.host, _destination_port(snapshot, d, port), d.subset),
                weight=uint32(max(d.weight, 1) if len(live) == 1 else d.weight),
                request_headers_to_add=_header_options(d.request_headers),
                request_headers_to_remove=list(d.request_headers.remove),
                response_headers_to_add=_header_options(d.response_headers),
                response_headers_to_remove=list(d.response_headers.remove),
            )
            action.weighted_clusters.clusters.append(weight)
    timeout = route.timeout or 0.0
    action.timeout.CopyFrom(duration(timeout))
    if route.timeout:
        action.max_stream_duration.max_stream_duration.CopyFrom(duration(route.timeout))
        action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(route.timeout))
    retries = route.retries
    if retries.attempts > 0:
        policy = rc.RetryPolicy(
            retry_on=",".join(retries.retry_on),
            num_retries=uint32(retries.attempts),
            retriable_status_codes=list(retries.retriable_status_codes),
        )
        if retries.per_try_timeout:
            policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
        action.retry_policy.CopyFrom(policy)
    if live:
        action.hash_policy.extend(_hash_policies(snapshot, live[0], port, view))
    for mirror in route.mirrors:
        mirror_port = mirror.port or port
        action.request_mirror_policies.append(
            rc.RouteAction.RequestMirrorPolicy(
                cluster=cluster_name(mirror.host, mirror_port, mirror.subset),
                runtime_fraction=base_pb2.RuntimeFractionalPercent(
                    default_value=fraction(mirror.percent)
                ),
            )
        )
    rewrite = route.rewrite
    if rewrite is not None:
        if rewrite.prefix is not None:
            action.prefix_rewrite = rewrite.prefix
        if rewrite.path is not None:
            action.regex_rewrite.pattern.regex = "^.*$"
            action.regex_rewrite.substitution = rewrite.path
        if rewrite.authority is not None:
            action.host_rewrite_literal = rewrite.authority
    return action


_SCHEME_PORTS = {"http": 80, "https": 443}


def _redirect(route: HttpRoute, port: int) -> Any:
    """A redirect; Gateway API RequestRedirect's port, when not given, is the scheme's
    well-known one if a scheme is given, else the listener's (``port``): HTTPRequestRedirectFilter
    ``port``. Well-known ports are left out of the Location header by the data plane."""
    redirect = route.redirect
    assert redirect is not None
    action = rc.RedirectAction(response_code=_REDIRECT_CODES.get(redirect.status, 0))
    if redirect.scheme:
        action.scheme_redirect = redirect.scheme
    if redirect.authority:
        action.host_redirect = redirect.authority
    if redirect.port:
        action.port_redirect = redirect.port
    elif redirect.derive_port:
        action.port_redirect = _SCHEME_PORTS.get(redirect.scheme or "", port)
    if redirect.path is not None:
        action.path_redirect = redirect.path
    if redirect.prefix is not None:
        action.prefix_rewrite = redirect.prefix
    return action


def _outbound_limit(
    snapshot: Snapshot, service: Service, route: HttpRoute, view: NodeView
) -> Any | None:
    """The local rate limit a RateLimit ``target`` puts on calls to this host (or route)."""
    if view.mode == "proxyless":
        return None  # grpcio has no local rate limit filter
    for limit in snapshot.model.rate_limits:
        if limit.target_host != service.host:
            continue
        if limit.target_route is not None and limit.target_route != route.name:
            continue
        return local_rate_limit(limit, f"outbound_{limit.origin.namespace}_{limit.origin.name}")
    return None


def _applies(
    route: HttpRoute, port: int, port_name: str | None, view: NodeView
) -> list[RouteMatch] | None:
    """The matches of ``route`` that apply on ``port`` (named ``port_name``: a GAMMA
    parentRef's sectionName) for this node; None: the route does not apply at all. An empty
    list: it matches every request."""
    if not route.matches:
        return []
    labels = dict(view.labels)
    kept = [
        m
        for m in route.matches
        if (m.port is None or m.port == port)
        and (m.port_name is None or m.port_name == port_name)
        and all(labels.get(k) == v for k, v in m.source_labels)
    ]
    return kept or None


def envoy_routes(snapshot: Snapshot, service: Service, port: int, view: NodeView) -> list[Any]:
    """The Envoy routes of ``service`` on ``port``, in order; a default route when none is set."""
    routes = snapshot.model.http_routes_for(service.host, view.namespace)
    result = _routes_on_port(snapshot, service, port, view, routes)
    if not result:  # no route set, or none for this port (GAMMA: a parentRef's port)
        fallback = HttpRoute(
            origin=ResourceRef("Service", service.namespace, service.host),
            name="default",
            destinations=(WeightedDestination(service.host, port=port, weight=100),),
        )
        default = rc.Route(
            name="default",
            match=rc.RouteMatch(prefix="/"),
            route=_action(snapshot, fallback, port, view),
        )
        _mark_fallback(default, snapshot, service, port)
        return [default]
    return result


def _routes_on_port(
    snapshot: Snapshot, service: Service, port: int, view: NodeView, routes: Sequence[HttpRoute]
) -> list[Any]:
    """The Envoy routes of ``routes`` that apply on ``port`` for this node."""
    result: list[Any] = []
    port_name = next((p.name for p in service.ports if p.number == port), None)
    for index, route in enumerate(routes):
        matches = _applies(route, port, port_name, view)
        if matches is None:
            continue
        name = f"{route.origin.namespace}/{route.origin.name}/{route.name or index}"
        for match in matches or [RouteMatch()]:
            envoy = rc.Route(
                name=name,
                match=route_match(match),
                request_headers_to_add=_header_options(route.request_headers),
                request_headers_to_remove=list(route.request_headers.remove),
                response_headers_to_add=_header_options(route.response_headers),
                response_headers_to_remove=list(route.response_headers.remove),
            )
            if route.redirect is not None:
                envoy.redirect.CopyFrom(_redirect(route, port))
            elif not route.destinations:
                _no_backend(envoy, service, port)
            else:
                envoy.route.CopyFrom(_action(snapshot, route, port, view))
            fault = _fault(route) if route.destinations or route.redirect else None
            if fault is not None:
                envoy.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))
            if route.cors is not None and view.mode != "proxyless":
                config = cors_policy(route.cors, string_matcher)
                envoy.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(config))
            limit = _outbound_limit(snapshot, service, route, view)
            if limit is not None:
                envoy.typed_per_filter_config[RATELIMIT_FILTER].CopyFrom(pack(limit))
            if route.redirect is None:
                _mark_fallback(envoy, snapshot, service, port)
            result.append(envoy)
    return result


def _no_backend(envoy: Any, service: Service, port: int) -> None:
    """A rule without backendRefs "performs no forwarding" and, with no filter that answers,
    gets 500 (Gateway API, HTTPRouteRule.backendRefs). Envoy would use a direct_response; the
    fault filter's abort of every request says the same in fields every data plane (the
    engine, grpcio) already reads, and the route's cluster (the Service itself) is never
    called."""
    envoy.route.CopyFrom(
        rc.RouteAction(cluster=cluster_name(service.host, port), timeout=duration(0.0))
    )
    abort = fault_pb2.HTTPFault(
        abort=fault_pb2.FaultAbort(http_status=500, percentage=fraction(100.0))
    )
    envoy.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(abort))


def _mark_fallback(envoy: Any, snapshot: Snapshot, service: Service, port: int) -> None:
    """A Fallback for ``service`` as the route's ``tulle`` metadata (``fallback``: the cluster,
    ``fallback_when``: the conditions); Envoy has no such field, grpcio ignores metadata."""
    for policy in snapshot.model.fallbacks:
        if policy.host == service.host:
            target = cluster_name(policy.to_host, policy.to_port or port)
            envoy.metadata.filter_metadata["tulle"].update(
                {"fallback": target, "fallback_when": ",".join(policy.when)}
            )
            return


def _virtual_host(
    snapshot: Snapshot, service: Service, port: int, view: NodeView, bare_names: bool
) -> Any:
    names = client_names(service, view)
    domains = [f"{name}:{port}" for name in names]
    if bare_names:
        domains.extend(names)
    return rc.VirtualHost(
        name=f"{service.host}:{port}",
        domains=domains,
        routes=envoy_routes(snapshot, service, port, view),
    )


def route_configurations(snapshot: Snapshot, view: NodeView) -> dict[str, Any]:
    """Every RouteConfiguration for a node: per service port, per port number (sidecars),
    and the HTTP forward proxy's (sidecars and library)."""
    configs: dict[str, Any] = {}
    by_port: dict[int, list[Any]] = {}
    proxy_hosts: list[Any] = []
    for service in visible_services(snapshot, view):
        if not is_routable(service):
            continue
        first = default_port(service)
        for port in http_ports(service):
            name = route_config_name(service.host, port)
            configs[name] = route_pb2.RouteConfiguration(
                name=name,
                virtual_hosts=[_virtual_host(snapshot, service, port, view, bare_names=True)],
            )
            if view.mode != "proxyless":
                by_port.setdefault(port, []).append(
                    _virtual_host(snapshot, service, port, view, bare_names=port == 80)
                )
                proxy_hosts.append(
                    _virtual_host(snapshot, service, port, view, bare_names=port == first)
                )
    if view.mode != "proxyless":
        for port, hosts in by_port.items():
            configs[str(port)] = route_pb2.RouteConfiguration(name=str(port), virtual_hosts=hosts)
        configs[HTTP_PROXY_ROUTE] = route_pb2.RouteConfiguration(
            name=HTTP_PROXY_ROUTE, virtual_hosts=proxy_hosts
        )
    return configs
