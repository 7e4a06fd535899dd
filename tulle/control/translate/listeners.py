"""Listeners. Proxyless gRPC: one api_listener per name a client may dial (``host`` and
``host:port`` in every form), RDS over ADS, fault then router filters — only what grpcio accepts;
its server Listeners (an ``xds=True`` grpcio server's) are ``grpc_server``'s. Sidecar and
library: the transparent outbound listener, one per service port number, the HTTP
forward-proxy listener, and the inbound listener for the node's own workload: per app port, an
mTLS filter chain (``transport_protocol: tls``) and/or a plain-text one (``raw_buffer``) as the
port's PeerAuthentication mode says (STRICT, PERMISSIVE: both, DISABLE), told apart by the TLS
inspector listener filter, as Istio's ``virtualInbound``. AuthorizationPolicy is RBAC there: HTTP
filters in an HTTP port's connection manager, network RBAC filters before the ``tcp_proxy`` of
an opaque TCP port."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from tulle.api.model import AuthorizationPolicyRule, Service, Workload
from tulle.control.translate.access_log import access_logs
from tulle.control.translate.context import (
    NodeView,
    Snapshot,
    client_names,
    default_port,
    http_ports,
    is_routable,
    own_workload,
    visible_services,
)
from tulle.control.translate.grpc_server import server_listeners
from tulle.control.translate.names import (
    HTTP_PROXY_LISTENER,
    HTTP_PROXY_ROUTE,
    INBOUND_LISTENER,
    OUTBOUND_LISTENER,
    cluster_name,
    inbound_cluster_name,
    route_config_name,
)
from tulle.control.translate.peer_authn import Mode, resolve
from tulle.control.translate.policy import (
    local_rate_limit,
    network_rbac_filters,
    rbac_filters,
    selects,
)
from tulle.control.translate.protos import ads, duration, pack
from tulle.control.translate.tls import downstream_context, transport_socket
from tulle.control.translate.tracing import tracing
from tulle.xds.types import (
    CORS_FILTER,
    FAULT_FILTER,
    HCM_FILTER,
    RATELIMIT_FILTER,
    ROUTER_FILTER,
    TCP_PROXY_FILTER,
)

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
HTTP_PROXY_PORT = 15080


def _filter(name: str, config: Any) -> Any:
    return hcm.HttpFilter(name=name, typed_config=pack(config))


def _router() -> Any:
    return _filter(ROUTER_FILTER, router_pb2.Router())


def http_filters(view: NodeView) -> list[Any]:
    """Outbound: CORS (sidecars and library; grpcio has none), fault injection, local rate
    limit (sidecars; grpcio has none), then the router, last as grpcio requires. Per-route
    configs switch CORS, fault and rate limit on."""
    filters = [_filter(FAULT_FILTER, fault_pb2.HTTPFault())]
    if view.mode != "proxyless":
        filters.insert(0, _filter(CORS_FILTER, cors_pb2.Cors()))
        filters.append(
            _filter(
                RATELIMIT_FILTER,
                local_rate_limit_pb2.LocalRateLimit(stat_prefix="outbound_ratelimit"),
            )
        )
    return [*filters, _router()]


def connection_manager(route_name: str, stat_prefix: str, view: NodeView) -> Any:
    """An HttpConnectionManager taking its routes over RDS."""
    return hcm.HttpConnectionManager(
        stat_prefix=stat_prefix,
        rds=hcm.Rds(config_source=ads(), route_config_name=route_name),
        http_filters=http_filters(view),
    )


def _address(ip: str, port: int) -> Any:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


def _api_listener(name: str, route_name: str, view: NodeView) -> Any:
    listener = listener_pb2.Listener(name=name)
    listener.api_listener.api_listener.CopyFrom(pack(connection_manager(route_name, name, view)))
    return listener


def proxyless_listeners(snapshot: Snapshot, view: NodeView) -> dict[str, Any]:
    """An api_listener for every name a gRPC client may dial: ``xds:///greeter`` (the service's
    first port), ``xds:///greeter.default.svc.cluster.local:50051``, ..."""
    result: dict[str, Any] = {}
    for service in visible_services(snapshot, view):
        if not is_routable(service):
            continue
        first = default_port(service)
        for port in http_ports(service):
            route = route_config_name(service.host, port)
            for name in client_names(service, view):
                result[f"{name}:{port}"] = _api_listener(f"{name}:{port}", route, view)
                if port == first:
                    result[name] = _api_listener(name, route, view)
    return result


def _hcm_chain(manager: Any) -> Any:
    return listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(manager))]
    )


def _http_chain(
    route_name: str, stat_prefix: str, view: NodeView, level: str, traced: Any, logs: list[Any]
) -> Any:
    manager = connection_manager(route_name, stat_prefix, view)
    _normalize_paths(manager, level)
    if traced is not None:
        manager.tracing.CopyFrom(traced)
    manager.access_log.extend(logs)
    return _hcm_chain(manager)


def _tcp_chain(service: Service, port: int, logs: list[Any]) -> Any:
    name = cluster_name(service.host, port)
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=name, cluster=name, access_log=logs)
    return listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=pack(proxy))]
    )


def sidecar_listeners(snapshot: Snapshot, view: NodeView) -> dict[str, Any]:
    """Listeners of a sidecar (or the library): outbound, per port, HTTP proxy, inbound."""
    result: dict[str, Any] = {}
    level = snapshot.model.settings.path_normalization
    traced = tracing(snapshot.model.settings, view)
    logs = access_logs(snapshot.model.settings)
    outbound = listener_pb2.Listener(
        name=OUTBOUND_LISTENER, address=_address("0.0.0.0", OUTBOUND_PORT)
    )
    outbound.use_original_dst.value = True
    result[OUTBOUND_LISTENER] = outbound
    http_seen: set[int] = set()
    for service in visible_services(snapshot, view):
        if not is_routable(service):
            continue
        for port in service.ports:
            name = f"0.0.0.0_{port.number}"
            if port.number in http_ports(service):
                if port.number in http_seen:
                    continue
                http_seen.add(port.number)
                chain = _http_chain(str(port.number), name, view, level, traced, logs)
            else:
                chain = _tcp_chain(service, port.number, logs)
                name = f"{service.host}_{port.number}"
            listener = listener_pb2.Listener(
                name=name, address=_address("0.0.0.0", port.number), filter_chains=[chain]
            )
            listener.bind_to_port.value = False
            result[name] = listener
    result[HTTP_PROXY_LISTENER] = listener_pb2.Listener(
        name=HTTP_PROXY_LISTENER,
        address=_address("127.0.0.1", HTTP_PROXY_PORT),
        filter_chains=[
            _http_chain(HTTP_PROXY_ROUTE, HTTP_PROXY_LISTENER, view, level, traced, logs)
        ],
    )
    inbound = _inbound(snapshot, view, traced, logs)
    if inbound is not None:
        result[INBOUND_LISTENER] = inbound
    return result


def _normalize_paths(manager: Any, level: str) -> None:
    """The mesh's path normalization in a sidecar's HttpConnectionManager, in Envoy's fields
    as Istio sets them: ``normalize_path`` (BASE and up), ``merge_slashes`` (MERGE_SLASHES and
    up), ``path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD``
    (DECODE_AND_MERGE_SLASHES)."""
    manager.normalize_path.value = level != "NONE"
    manager.merge_slashes = level in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")
    if level == "DECODE_AND_MERGE_SLASHES":
        manager.path_with_escaped_slashes_action = hcm.HttpConnectionManager.UNESCAPE_AND_FORWARD


def _authorization_policies(
    snapshot: Snapshot, workload: Workload
) -> list[AuthorizationPolicyRule]:
    """The AuthorizationPolicies that select the workload."""
    labels, namespace = workload.labels, workload.namespace
    return [
        p
        for p in snapshot.model.authorization_policies
        if selects(p.selector, p.namespace, labels, namespace)
    ]


def _inbound_filters(snapshot: Snapshot, workload: Workload, port: int) -> list[Any]:
    """RBAC from the AuthorizationPolicies and local rate limit from the RateLimits that select
    the workload, then the router."""
    labels, namespace = workload.labels, workload.namespace
    policies = _authorization_policies(snapshot, workload)
    filters = [_filter(name, config) for name, config in rbac_filters(policies)]
    limits = [
        limit
        for limit in snapshot.model.rate_limits
        if limit.selector is not None
        and selects(limit.selector, limit.namespace, labels, namespace)
    ]
    if limits:
        config = local_rate_limit(limits[0], f"inbound_{port}_ratelimit")
        filters.append(_filter(RATELIMIT_FILTER, config))
    return [*filters, _router()]


def _inbound_tcp_chain(
    snapshot: Snapshot, workload: Workload, cluster: str, logs: list[Any]
) -> Any:
    """An opaque TCP port: network RBAC from the AuthorizationPolicies (HTTP-only fields as
    Istio treats them on TCP), then the ``tcp_proxy`` to the app."""
    policies = _authorization_policies(snapshot, workload)
    filters = [
        listener_components_pb2.Filter(name=name, typed_config=pack(config))
        for name, config in network_rbac_filters(policies)
    ]
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster, access_log=logs)
    filters.append(listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=pack(proxy)))
    return listener_components_pb2.FilterChain(filters=filters)


def _inbound(snapshot: Snapshot, view: NodeView, traced: Any, logs: list[Any]) -> Any | None:
    workload = own_workload(snapshot, view)
    if workload is None:
        return None
    listener = listener_pb2.Listener(
        name=INBOUND_LISTENER, address=_address("0.0.0.0", INBOUND_PORT)
    )
    listener.listener_filters.append(
        listener_components_pb2.ListenerFilter(
            name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
        )
    )
    mtls = resolve(snapshot.model, workload.namespace, workload.labels)
    for port in workload.ports:
        cluster = inbound_cluster_name(port.port)
        if port.protocol == "TCP":
            chain = _inbound_tcp_chain(snapshot, workload, cluster, logs)
        else:
            routes = route_pb2.RouteConfiguration(
                name=cluster,
                virtual_hosts=[
                    rc.VirtualHost(
                        name="inbound",
                        domains=["*"],
                        routes=[
                            rc.Route(
                                match=rc.RouteMatch(prefix="/"),
                                route=rc.RouteAction(cluster=cluster, timeout=duration(0)),
                            )
                        ],
                    )
                ],
            )
            manager = hcm.HttpConnectionManager(
                stat_prefix=cluster,
                route_config=routes,
                http_filters=_inbound_filters(snapshot, workload, port.port),
            )
            _trusted_proxies(manager, snapshot.model.settings.num_trusted_proxies)
            _normalize_paths(manager, snapshot.model.settings.path_normalization)
            if traced is not None:
                manager.tracing.CopyFrom(traced)
            manager.access_log.extend(logs)
            chain = _hcm_chain(manager)
        chain.filter_chain_match.destination_port.value = port.port
        # Who the port serves, for the inbound metrics' destination_service label.
        chain.metadata.filter_metadata["tulle"].update({"service": workload.service_host})
        listener.filter_chains.extend(_by_transport(chain, cluster, mtls.for_port(port.port)))
    return listener


def _trusted_proxies(manager: Any, count: int) -> None:
    """The Mesh's ``numTrustedProxies`` on an inbound HttpConnectionManager, as Istio sets a
    gateway's (``use_remote_address`` and ``xff_num_trusted_hops``): RBAC's ``remote_ip``
    (remoteIpBlocks, ``remote.ip``) is then the ``count``-th X-Forwarded-For address from the
    right; with 0, the connection's peer."""
    if count:
        manager.use_remote_address.value = True
        manager.xff_num_trusted_hops = count


def _by_transport(chain: Any, name: str, mode: Mode) -> list[Any]:
    """``chain`` for the transports ``mode`` accepts: an mTLS copy (named ``<name>mtls``, first,
    as Istio orders them) unless DISABLE, a plain-text copy unless STRICT."""
    result = []
    if mode != "DISABLE":
        secure = listener_components_pb2.FilterChain()
        secure.CopyFrom(chain)
        secure.name = f"{name}mtls"
        secure.filter_chain_match.transport_protocol = "tls"
        secure.transport_socket.CopyFrom(transport_socket(downstream_context()))
        result.append(secure)
    if mode != "STRICT":
        chain.name = name
        chain.filter_chain_match.transport_protocol = "raw_buffer"
        result.append(chain)
    return result


def listeners(snapshot: Snapshot, view: NodeView) -> dict[str, Any]:
    """The listeners for a node of any mode."""
    if view.mode == "proxyless":
        return {**proxyless_listeners(snapshot, view), **server_listeners(snapshot, view)}
    return sidecar_listeners(snapshot, view)
