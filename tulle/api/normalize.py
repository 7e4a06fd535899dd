"""Normalization: validated resources → one immutable :class:`~tulle.api.model.MeshModel`.

Pure functions. Hosts are resolved against each resource's namespace, Istio's defaults are filled
in, and VirtualService and Gateway API HTTPRoute rules become the same :class:`HttpRoute`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from tulle.api.durations import parse_duration
from tulle.api.hosts import fqdn
from tulle.api.kinds import (
    AuthorizationPolicy,
    DestinationRule,
    Fallback,
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
from tulle.api.kinds import gateway as gw
from tulle.api.kinds import networking as net
from tulle.api.kinds.base import StringMatch
from tulle.api.kubernetes import service_of
from tulle.api.model import (
    DEFAULT_RETRY_ON,
    AuthorizationPolicyRule,
    AuthorizationRule,
    ConnectionPool,
    DestinationPolicy,
    FallbackPolicy,
    FaultPolicy,
    HeaderEdits,
    HttpRoute,
    LoadBalancer,
    MeshModel,
    MeshSettings,
    Mirror,
    OutlierPolicy,
    Pairs,
    PeerAuthenticationPolicy,
    PolicyLayer,
    RateLimitPolicy,
    ReadinessCheck,
    Redirect,
    ResourceRef,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    ScopedPolicy,
    ScopedRoutes,
    Service,
    ServicePort,
    StaticEndpoint,
    StringMatcher,
    Subset,
    TcpMatch,
    TcpRoute,
    WeightedDestination,
)
from tulle.api.model import Workload as WorkloadModel
from tulle.api.model import WorkloadPort as WorkloadPortModel


def pairs(mapping: Mapping[str, Any] | None, lower: bool = False) -> Pairs:
    """A mapping as sorted ``(key, value)`` pairs (keys lowercased when ``lower``)."""
    if not mapping:
        return ()
    return tuple(sorted(((k.lower() if lower else k), str(v)) for k, v in mapping.items()))


def ref(resource: Resource) -> ResourceRef:
    """The :class:`ResourceRef` of ``resource``."""
    return ResourceRef(resource.KIND, resource.namespace, resource.name)


def _seconds(text: str | None) -> float | None:
    return None if text is None else parse_duration(text)


def export_namespaces(export_to: list[str], namespace: str) -> frozenset[str] | None:
    """The namespaces a resource's ``exportTo`` names (``.``: its own; ``~``: none); None when
    it is exported to all (``*``, or no ``exportTo``: Istio's default, as Tulle's Mesh has no
    default of its own). Istio's VirtualService, DestinationRule and ServiceEntry reference,
    ``exportTo``."""
    if not export_to or "*" in export_to:
        return None
    return frozenset(namespace if name == "." else name for name in export_to if name != "~")


class HostResolver:
    """Resolves host names as written in a resource of a given namespace."""

    def __init__(self, namespaces: Iterable[str]) -> None:
        self.namespaces = frozenset(namespaces)

    def __call__(self, host: str, namespace: str) -> str:
        return fqdn(host, namespace, self.namespaces)


def namespaces_of(resources: Iterable[Resource]) -> frozenset[str]:
    """Every namespace the resources live in."""
    return frozenset(resource.namespace for resource in resources)


def workload_labels(workload: Workload) -> dict[str, str]:
    """A workload's labels, with ``app: <service>`` added as Kubernetes deployments have it."""
    labels = {"app": workload.spec.service or workload.name}
    labels.update(workload.spec.labels)
    return labels


# --- services and workloads -----------------------------------------------------------------


def _workload(workload: Workload, resolve: HostResolver) -> WorkloadModel:
    spec = workload.spec
    readiness = None
    if spec.readiness is not None:
        http = spec.readiness.http_get
        check = http or spec.readiness.tcp_socket
        readiness = ReadinessCheck(
            kind="http" if http else "tcp",
            path=http.path if http else None,
            port=check.port if check else None,
            period=parse_duration(spec.readiness.period),
            timeout=parse_duration(spec.readiness.timeout),
        )
    return WorkloadModel(
        name=workload.name,
        namespace=workload.namespace,
        service_host=resolve(spec.service or workload.name, workload.namespace),
        command=tuple(spec.command),
        args=tuple(spec.args),
        env=pairs(spec.env),
        replicas=spec.replicas,
        ports=tuple(WorkloadPortModel(p.name, p.port, p.protocol) for p in spec.ports),
        service_account=spec.service_account or workload.name,
        labels=pairs(workload_labels(workload)),
        mesh=spec.mesh,
        readiness=readiness,
        origin=ref(workload),
    )


def kubernetes_service(service: KubernetesService) -> Service | None:
    """The mesh service a Kubernetes Service of a file defines (None for ExternalName), as
    tulle.kube maps a cluster's Service."""
    return service_of(service.model_dump(mode="json", exclude_none=True), ref(service))


def _services(
    workloads: list[WorkloadModel],
    kubernetes: list[KubernetesService],
    entries: list[ServiceEntry],
    resolve: HostResolver,
) -> dict[str, Service]:
    """Workloads define services (their versions' ports merged); a Kubernetes Service of a
    host a Workload serves adds only its origin (validation checks that their ports agree),
    of another host defines it, with no endpoints of its own; a ServiceEntry defines its
    hosts (validation refuses one that another resource defines)."""
    services: dict[str, Service] = {}
    for workload in workloads:
        ports = tuple(ServicePort(p.port, p.protocol, p.name) for p in workload.ports)
        known = services.get(workload.service_host)
        if known is not None:
            services[workload.service_host] = replace(
                known,
                ports=known.ports + tuple(p for p in ports if p not in known.ports),
                origins=(*known.origins, workload.origin),
            )
            continue
        services[workload.service_host] = Service(
            host=workload.service_host,
            namespace=workload.namespace,
            ports=ports,
            location="MESH_INTERNAL",
            resolution="STATIC",
            origins=(workload.origin,),
        )
    for kube in kubernetes:
        service = kubernetes_service(kube)
        if service is None:
            continue
        known = services.get(service.host)
        if known is None:
            services[service.host] = service
        else:
            services[service.host] = replace(known, origins=(*known.origins, *service.origins))
    for entry in entries:
        spec = entry.spec
        endpoints = tuple(
            StaticEndpoint(
                address=e.address,
                ports=tuple(sorted((k, str(v)) for k, v in e.ports.items())),
                labels=pairs(e.labels),
                weight=e.weight or 1,
                locality=e.locality,
                service_account=e.service_account,
            )
            for e in spec.endpoints
        )
        for host in spec.hosts:
            name = resolve(host, entry.namespace)
            services[name] = Service(
                host=name,
                namespace=entry.namespace,
                ports=tuple(
                    ServicePort(p.number, p.protocol, p.name, p.target_port) for p in spec.ports
                ),
                location=spec.location,
                resolution=spec.resolution,
                origins=(ref(entry),),
                addresses=tuple(spec.addresses),
                endpoints=endpoints,
                workload_selector=(
                    pairs(spec.workload_selector.labels) if spec.workload_selector else None
                ),
                export_to=export_namespaces(spec.export_to, entry.namespace),
            )
    return services


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


def _route_match(match: net.HTTPMatchRequest) -> RouteMatch:
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
        per_try_timeout=_seconds(retries.per_try_timeout),
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


def _virtual_service_route(
    route: net.HTTPRoute, origin: ResourceRef, namespace: str, resolve: HostResolver
) -> HttpRoute:
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
            status=r.redirect_code, scheme=r.scheme, authority=r.authority, port=r.port, path=r.uri
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
        matches=tuple(_route_match(m) for m in route.match),
        destinations=destinations,
        redirect=redirect,
        rewrite=rewrite,
        timeout=_seconds(route.timeout),
        retries=_retries(route.retries),
        fault=_fault(route.fault),
        mirrors=mirrors,
        request_headers=_edits(route.headers.request if route.headers else None),
        response_headers=_edits(route.headers.response if route.headers else None),
    )


def _tcp_route(
    route: net.TCPRoute, origin: ResourceRef, namespace: str, resolve: HostResolver
) -> TcpRoute:
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


# --- Gateway API HTTPRoute ------------------------------------------------------------------

_PATH_KINDS = {"Exact": "exact", "PathPrefix": "path_prefix", "RegularExpression": "regex"}
_VALUE_KINDS = {"Exact": "exact", "RegularExpression": "regex"}


def _gateway_match(match: gw.HTTPRouteMatch, port: int | None) -> RouteMatch:
    path = match.path or gw.PathMatch()
    return RouteMatch(
        path=StringMatcher(_PATH_KINDS[path.type], path.value),  # type: ignore[arg-type]
        method=StringMatcher("exact", match.method) if match.method else None,
        headers=_first_of_each_name(
            (h.name.lower(), StringMatcher(_VALUE_KINDS[h.type], h.value))  # type: ignore[arg-type]
            for h in match.headers
        ),
        query_params=_first_of_each_name(
            (q.name, StringMatcher(_VALUE_KINDS[q.type], q.value))  # type: ignore[arg-type]
            for q in match.query_params
        ),
        port=port,
    )


def _first_of_each_name(
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


def _gateway_precedence(match: RouteMatch) -> tuple[int, int, int, int, int]:
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


def _header_modifier(modifier: gw.HeaderModifier | None) -> HeaderEdits:
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


def _backend_host(
    name: str, namespace: str | None, route_namespace: str, resolve: HostResolver
) -> str:
    return resolve(name, namespace or route_namespace)


def _gateway_rule(
    rule: gw.HTTPRouteRule,
    origin: ResourceRef,
    namespace: str,
    port: int | None,
    resolve: HostResolver,
) -> list[HttpRoute]:
    request_headers = response_headers = HeaderEdits()
    redirect = rewrite = None
    mirrors: list[Mirror] = []
    for f in rule.filters:
        if f.request_header_modifier is not None:
            request_headers = _header_modifier(f.request_header_modifier)
        if f.response_header_modifier is not None:
            response_headers = _header_modifier(f.response_header_modifier)
        if f.request_redirect is not None:
            r = f.request_redirect
            path, prefix = _path_change(r.path)
            redirect = Redirect(
                r.status_code, r.scheme, r.hostname, r.port, path, prefix, derive_port=True
            )
        if f.url_rewrite is not None:
            path, prefix = _path_change(f.url_rewrite.path)
            rewrite = Rewrite(prefix=prefix, path=path, authority=f.url_rewrite.hostname)
        if f.request_mirror is not None:
            m = f.request_mirror
            if m.fraction is not None:
                percent = 100.0 * m.fraction.numerator / m.fraction.denominator
            else:
                percent = float(m.percent if m.percent is not None else 100)
            host = _backend_host(m.backend_ref.name, m.backend_ref.namespace, namespace, resolve)
            mirrors.append(Mirror(host, None, m.backend_ref.port, percent))
    destinations = tuple(
        WeightedDestination(
            host=_backend_host(b.name, b.namespace, namespace, resolve),
            port=b.port,
            weight=b.weight,
            request_headers=_header_modifier(
                next(
                    (f.request_header_modifier for f in b.filters if f.request_header_modifier),
                    None,
                )
            ),
            response_headers=_header_modifier(
                next(
                    (f.response_header_modifier for f in b.filters if f.response_header_modifier),
                    None,
                )
            ),
        )
        for b in rule.backend_refs
    )
    timeout = per_try = None
    if rule.timeouts is not None:
        timeout = _seconds(rule.timeouts.request)
        per_try = _seconds(rule.timeouts.backend_request)
    matches = rule.matches or [gw.HTTPRouteMatch()]
    # One model route per match, so that routes from all rules can be ordered by precedence.
    return [
        HttpRoute(
            origin=origin,
            name=rule.name,
            matches=(_gateway_match(match, port),),
            destinations=destinations,
            redirect=redirect,
            rewrite=rewrite,
            timeout=timeout or None,
            retries=RetryPolicy(per_try_timeout=per_try or None),
            mirrors=tuple(mirrors),
            request_headers=request_headers,
            response_headers=response_headers,
        )
        for match in matches
    ]


def _gateway_routes(
    route: HTTPRoute, resolve: HostResolver
) -> dict[tuple[str, bool], list[HttpRoute]]:
    """The routes of an HTTPRoute by (host, consumer): only its Service parents count (GAMMA;
    the checks report the others). A consumer route (the route's namespace is not its
    Service's) applies to callers in the route's namespace only (Gateway API, GAMMA: "Route
    types: producer and consumer routes")."""
    by_host: dict[tuple[str, bool], list[HttpRoute]] = {}
    for parent in route.spec.parent_refs:
        if not parent.is_service:
            continue
        host = _backend_host(parent.name, parent.namespace, route.namespace, resolve)
        consumer = (parent.namespace or route.namespace) != route.namespace
        rules = [
            r
            for rule in route.spec.rules
            for r in _gateway_rule(rule, ref(route), route.namespace, parent.port, resolve)
        ]
        by_host.setdefault((host, consumer), []).extend(rules)
    return by_host


# --- DestinationRule ------------------------------------------------------------------------


def _load_balancer(settings: net.LoadBalancerSettings | None) -> LoadBalancer | None:
    if settings is None:
        return None
    if settings.simple is not None:
        policy = "LEAST_REQUEST" if settings.simple == "LEAST_CONN" else settings.simple
        return LoadBalancer(policy=policy)
    hashing = settings.consistent_hash
    assert hashing is not None
    if hashing.http_header_name is not None:
        on, key = "header", hashing.http_header_name.lower()
    elif hashing.http_cookie is not None:
        on, key = "cookie", hashing.http_cookie.name
    elif hashing.http_query_parameter_name is not None:
        on, key = "query_parameter", hashing.http_query_parameter_name
    else:
        on, key = "source_ip", None
    cookie = hashing.http_cookie
    return LoadBalancer(
        policy="RING_HASH",
        hash_on=on,  # type: ignore[arg-type]
        hash_key=key,
        cookie_path=cookie.path if cookie else None,
        cookie_ttl=_seconds(cookie.ttl) if cookie else None,
        minimum_ring_size=hashing.minimum_ring_size,
    )


def _connection_pool(settings: net.ConnectionPoolSettings | None) -> ConnectionPool | None:
    if settings is None:
        return None
    tcp = settings.tcp or net.TCPSettings()
    http = settings.http or net.HTTPSettings()
    defaults = ConnectionPool()
    return ConnectionPool(
        max_connections=tcp.max_connections,
        connect_timeout=_seconds(tcp.connect_timeout) or defaults.connect_timeout,
        max_pending_requests=http.http1_max_pending_requests,
        max_requests=http.http2_max_requests,
        max_requests_per_connection=http.max_requests_per_connection or None,
        max_retries=http.max_retries,
        idle_timeout=_seconds(http.idle_timeout) or defaults.idle_timeout,
    )


def _outlier(settings: net.OutlierDetection | None) -> OutlierPolicy | None:
    if settings is None:
        return None
    defaults = OutlierPolicy()
    return OutlierPolicy(
        consecutive_5xx_errors=(
            settings.consecutive_5xx_errors
            if settings.consecutive_5xx_errors is not None
            else defaults.consecutive_5xx_errors
        ),
        consecutive_gateway_errors=settings.consecutive_gateway_errors or 0,
        interval=_seconds(settings.interval) or defaults.interval,
        base_ejection_time=_seconds(settings.base_ejection_time) or defaults.base_ejection_time,
        max_ejection_percent=(
            settings.max_ejection_percent
            if settings.max_ejection_percent is not None
            else defaults.max_ejection_percent
        ),
        min_health_percent=settings.min_health_percent or 0,
    )


def _layer(policy: net.TrafficPolicy | net.PortTrafficPolicy | None) -> PolicyLayer:
    if policy is None:
        return PolicyLayer()
    ports: tuple[tuple[int, PolicyLayer], ...] = ()
    if isinstance(policy, net.TrafficPolicy):
        ports = tuple((p.port.number, _layer(p)) for p in policy.port_level_settings)
    return PolicyLayer(
        load_balancer=_load_balancer(policy.load_balancer),
        connection_pool=_connection_pool(policy.connection_pool),
        outlier_detection=_outlier(policy.outlier_detection),
        tls_mode=policy.tls.mode if policy.tls else None,
        ports=ports,
    )


def _destination_policy(rule: DestinationRule, resolve: HostResolver) -> DestinationPolicy:
    return DestinationPolicy(
        host=resolve(rule.spec.host, rule.namespace),
        origin=ref(rule),
        policy=_layer(rule.spec.traffic_policy),
        subsets=tuple(
            Subset(s.name, pairs(s.labels), _layer(s.traffic_policy)) for s in rule.spec.subsets
        ),
    )


# --- security, rate limits, mesh ------------------------------------------------------------


def _field_pairs(model: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    data = model.model_dump(by_alias=True)
    return tuple(sorted((k, tuple(v)) for k, v in data.items() if v))


def _authorization(policy: AuthorizationPolicy) -> AuthorizationPolicyRule:
    spec = policy.spec
    return AuthorizationPolicyRule(
        origin=ref(policy),
        namespace=policy.namespace,
        selector=pairs(spec.selector.match_labels) if spec.selector else None,
        action=spec.action,
        rules=tuple(
            AuthorizationRule(
                sources=tuple(_field_pairs(f.source) for f in rule.from_),
                operations=tuple(_field_pairs(t.operation) for t in rule.to),
                conditions=tuple((c.key, tuple(c.values), tuple(c.not_values)) for c in rule.when),
            )
            for rule in spec.rules
        ),
    )


def _peer_authentication(policy: PeerAuthentication) -> PeerAuthenticationPolicy:
    spec = policy.spec
    return PeerAuthenticationPolicy(
        origin=ref(policy),
        namespace=policy.namespace,
        selector=pairs(spec.selector.match_labels) if spec.selector else None,
        mode=spec.mtls.mode if spec.mtls else "UNSET",
        port_modes=tuple(sorted((port, m.mode) for port, m in spec.port_level_mtls.items())),
    )


def _rate_limit(limit: RateLimit, resolve: HostResolver) -> RateLimitPolicy:
    spec = limit.spec
    per_second = 1.0 if spec.limit.unit == "second" else 60.0
    return RateLimitPolicy(
        origin=ref(limit),
        namespace=limit.namespace,
        rate=spec.limit.requests / per_second,
        burst=spec.limit.burst or spec.limit.requests,
        status_code=spec.status_code,
        selector=pairs(spec.selector.match_labels) if spec.selector else None,
        target_host=resolve(spec.target.host, limit.namespace) if spec.target else None,
        target_route=spec.target.route if spec.target else None,
    )


def _fallback(fallback: Fallback, resolve: HostResolver) -> FallbackPolicy:
    spec = fallback.spec
    return FallbackPolicy(
        origin=ref(fallback),
        host=resolve(spec.host, fallback.namespace),
        to_host=resolve(spec.to.host, fallback.namespace),
        to_port=spec.to.port,
        when=tuple(spec.when),
    )


def _settings(meshes: list[Mesh]) -> MeshSettings:
    if not meshes:
        return MeshSettings()
    spec = meshes[0].spec
    return MeshSettings(
        trust_domain=spec.trust_domain,
        mtls_mode=spec.mtls.mode,
        outbound_policy=spec.outbound_traffic_policy.mode,
        access_log=spec.access_log.enabled,
        access_log_format=spec.access_log.format,
        tracing_sampling=spec.tracing.sampling,
        path_normalization=spec.path_normalization.normalization,
        workload_certificate_lifetime=parse_duration(spec.workload_certificate_lifetime),
    )


def _of_kind(resources: Iterable[Resource], kind: type[Any]) -> list[Any]:
    return [r for r in resources if isinstance(r, kind)]


def build_model(resources: Iterable[Resource]) -> MeshModel:
    """The mesh model of ``resources`` (which must be valid: see :func:`tulle.api.validate`).

    Order matters only where Istio's does: routes of a VirtualService keep their order; for a
    host routed twice, the first resource wins (validation reports the conflict)."""
    items = list(resources)
    resolve = HostResolver(namespaces_of(items))
    workloads = [_workload(w, resolve) for w in _of_kind(items, Workload)]
    http_routes: dict[str, tuple[HttpRoute, ...]] = {}
    tcp_routes: dict[str, tuple[TcpRoute, ...]] = {}
    scoped_routes: dict[str, list[ScopedRoutes]] = {}
    for vs in _of_kind(items, VirtualService):
        origin = ref(vs)
        http = tuple(_virtual_service_route(r, origin, vs.namespace, resolve) for r in vs.spec.http)
        tcp = tuple(_tcp_route(r, origin, vs.namespace, resolve) for r in vs.spec.tcp)
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
        for (host, consumer), routes in _gateway_routes(route, resolve).items():
            key = (host, route.namespace if consumer else None)
            gateway_routes.setdefault(key, []).extend(routes)
    for (host, consumer_namespace), routes in gateway_routes.items():
        ordered = tuple(sorted(routes, key=lambda r: _gateway_precedence(r.matches[0])))
        if consumer_namespace is None:
            http_routes.setdefault(host, ordered)
        else:
            scoped = ScopedRoutes(consumer_namespace, frozenset({consumer_namespace}), ordered)
            scoped_routes.setdefault(host, []).append(scoped)
    policies: dict[str, DestinationPolicy] = {}
    scoped_policies: dict[str, list[ScopedPolicy]] = {}
    for rule in _of_kind(items, DestinationRule):
        policy = _destination_policy(rule, resolve)
        seen_in = export_namespaces(rule.spec.export_to, rule.namespace)
        if seen_in is None:
            policies.setdefault(policy.host, policy)
        else:
            scoped_policy = ScopedPolicy(rule.namespace, seen_in, policy)
            scoped_policies.setdefault(policy.host, []).append(scoped_policy)
    return MeshModel(
        settings=_settings(_of_kind(items, Mesh)),
        services=MappingProxyType(
            _services(
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
            _peer_authentication(p) for p in _of_kind(items, PeerAuthentication)
        ),
        authorization_policies=tuple(
            _authorization(p) for p in _of_kind(items, AuthorizationPolicy)
        ),
        rate_limits=tuple(_rate_limit(r, resolve) for r in _of_kind(items, RateLimit)),
        fallbacks=tuple(_fallback(f, resolve) for f in _of_kind(items, Fallback)),
        scoped_routes=MappingProxyType({h: tuple(s) for h, s in scoped_routes.items()}),
        scoped_policies=MappingProxyType({h: tuple(s) for h, s in scoped_policies.items()}),
    )
