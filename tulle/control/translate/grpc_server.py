"""Server Listeners for proxyless gRPC (gRFC A36): what an ``xds=True`` grpcio server asks for.

A grpcio server started with ``grpc.server(..., xds=True)`` asks for the Listener named by its
bootstrap's template and the address it listens on
(``xds.tulle.dev/grpc/lds/inbound/127.0.0.1:50051``), and refuses one whose address is not that
address. A proxyless node whose Workload is known (by the node's pod name) gets one per port of
the Workload (TCP ports aside) and per address it may listen on: ``0.0.0.0``, ``[::]``,
``127.0.0.1``, and the addresses its service's endpoints are registered with; and one per
endpoint of the Workload registered at another port than the service port (``tulle up`` on
loopback gives each replica a port of its own, registered with the service port it stands for).

Each Listener has one filter chain: an HttpConnectionManager with an inline route (every path,
``non_forwarding_action``, which is what a gRPC server's routes must have) and the workload's
AuthorizationPolicies as RBAC (gRFC A41: grpcio matches ``principal_name`` against the peer
certificate's URI SAN), then the router. grpcio's server has no listener filters, so it cannot
tell TLS from plain text on one port: PERMISSIVE cannot be served. As Istio does, a port is
STRICT when the workload is in the mesh (its PeerAuthentication says STRICT or PERMISSIVE, and
its ``mesh`` is not ``none``): the chain carries a DownstreamTlsContext requiring a client
certificate, with the bootstrap's ``default`` certificate provider for its certificate and the
roots; otherwise (DISABLE, or ``mesh: none``) it is plain text."""

from __future__ import annotations

from typing import Any, Literal

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from tulle.api.model import Workload
from tulle.control.translate.context import NodeView, Snapshot, own_workload
from tulle.control.translate.peer_authn import resolve
from tulle.control.translate.policy import rbac_filters, selects
from tulle.control.translate.protos import pack
from tulle.control.translate.tls import (
    IDENTITY_SECRET,
    PROVIDER_INSTANCE,
    ROOT_SECRET,
    transport_socket,
)
from tulle.xds.types import GRPC_SERVER_LISTENER_TEMPLATE, HCM_FILTER, ROUTER_FILTER

ServerMode = Literal["STRICT", "DISABLE"]
LISTEN_ADDRESSES = ("0.0.0.0", "::", "127.0.0.1")


def server_listener_name(address: str, port: int) -> str:
    """The Listener a grpcio server listening on ``address:port`` asks for."""
    host = f"[{address}]" if ":" in address else address
    return GRPC_SERVER_LISTENER_TEMPLATE % f"{host}:{port}"


def server_mode(workload: Workload, mode: str) -> ServerMode:
    """A proxyless server port's mode: STRICT in the mesh, DISABLE otherwise (never PERMISSIVE)."""
    return "DISABLE" if workload.mesh == "none" or mode == "DISABLE" else "STRICT"


def server_context() -> Any:
    """A grpcio server's DownstreamTlsContext (gRFC A29): its certificate and the roots from the
    bootstrap's ``default`` certificate provider, a client certificate required."""
    common = tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
            instance_name=PROVIDER_INSTANCE, certificate_name=IDENTITY_SECRET
        ),
        validation_context=common_pb2.CertificateValidationContext(
            ca_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
                instance_name=PROVIDER_INSTANCE, certificate_name=ROOT_SECRET
            )
        ),
    )
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    context.require_client_certificate.value = True
    return context


def _manager(snapshot: Snapshot, workload: Workload, port: int) -> Any:
    policies = [
        p
        for p in snapshot.model.authorization_policies
        if selects(p.selector, p.namespace, workload.labels, workload.namespace)
    ]
    filters = [
        hcm.HttpFilter(name=name, typed_config=pack(config))
        for name, config in rbac_filters(policies)
    ]
    filters.append(hcm.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())))
    name = f"inbound|{port}||"
    routes = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            rc.VirtualHost(
                name="inbound",
                domains=["*"],
                routes=[
                    rc.Route(
                        match=rc.RouteMatch(prefix="/"),
                        non_forwarding_action=rc.NonForwardingAction(),
                    )
                ],
            )
        ],
    )
    return hcm.HttpConnectionManager(stat_prefix=name, route_config=routes, http_filters=filters)


def _addresses(snapshot: Snapshot, workload: Workload, port: int) -> list[tuple[str, int]]:
    """Where a server of ``workload``'s ``port`` may listen: every address it may listen on at
    that port, and each endpoint of the workload registered for it at its own port."""
    endpoints = snapshot.endpoints_by_service.get(workload.service_host, ())
    registered = {e.address for e in endpoints}
    own = {
        (e.address, e.port)
        for e in endpoints
        if e.workload == workload.name
        and e.namespace == workload.namespace
        and e.service_port == port
        and e.port != port
    }
    everywhere = [*LISTEN_ADDRESSES, *sorted(registered - set(LISTEN_ADDRESSES))]
    return [*((address, port) for address in everywhere), *sorted(own)]


def server_listeners(snapshot: Snapshot, view: NodeView) -> dict[str, Any]:
    """The server Listeners of a proxyless node's Workload (none when it has no Workload)."""
    workload = own_workload(snapshot, view)
    if workload is None:
        return {}
    policy = resolve(snapshot.model, workload.namespace, workload.labels)
    result: dict[str, Any] = {}
    for port in workload.ports:
        if port.protocol == "TCP":
            continue
        chain = listener_components_pb2.FilterChain(
            name=f"inbound|{port.port}||",
            filters=[
                listener_components_pb2.Filter(
                    name=HCM_FILTER, typed_config=pack(_manager(snapshot, workload, port.port))
                )
            ],
        )
        if server_mode(workload, policy.for_port(port.port)) == "STRICT":
            chain.name += "mtls"
            chain.transport_socket.CopyFrom(transport_socket(server_context()))
        for address, number in _addresses(snapshot, workload, port.port):
            name = server_listener_name(address, number)
            result[name] = listener_pb2.Listener(
                name=name,
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=address, port_value=number)
                ),
                filter_chains=[chain],
            )
    return result


def server_modes(listeners: dict[str, Any]) -> dict[str, ServerMode]:
    """``{"<address>:<port>": mode}`` of the server Listeners among ``listeners`` (as sent), for
    ``tulle proxy-status``."""
    prefix = GRPC_SERVER_LISTENER_TEMPLATE.replace("%s", "")
    modes: dict[str, ServerMode] = {}
    for name, listener in listeners.items():
        if name.startswith(prefix) and listener.filter_chains:
            secure = listener.filter_chains[0].HasField("transport_socket")
            modes[name[len(prefix) :]] = "STRICT" if secure else "DISABLE"
    return modes
