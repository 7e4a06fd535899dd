"""The xDS resource types Tulle serves, by type URL and by the short names the CLI uses."""

from __future__ import annotations

from typing import Final

LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

SHORT_NAMES: Final = {
    LISTENER: "listeners",
    ROUTE: "routes",
    CLUSTER: "clusters",
    ENDPOINT: "endpoints",
    SECRET: "secrets",
}
BY_SHORT_NAME: Final = {short: url for url, short in SHORT_NAMES.items()}

# The Secret holding the mesh's trust bundle (Envoy's SDS name under Istio), which the control
# plane pushes over ADS so that a root rotation reaches every workload at once.
TRUST_BUNDLE_SECRET: Final = "ROOTCA"

# Types whose state-of-the-world response must hold every subscribed resource: a resource left
# out means it was removed. For the others a response holds only what it names.
FULL_STATE_TYPES: Final = frozenset({LISTENER, CLUSTER})

# Filter names and typed-config type URLs, shared by the translator and the data planes.
FAULT_FILTER: Final = "envoy.filters.http.fault"
CORS_FILTER: Final = "envoy.filters.http.cors"
RATELIMIT_FILTER: Final = "envoy.filters.http.local_ratelimit"
RBAC_FILTER: Final = "envoy.filters.http.rbac"
NETWORK_RBAC_FILTER: Final = "envoy.filters.network.rbac"
ROUTER_FILTER: Final = "envoy.filters.http.router"
HCM_FILTER: Final = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER: Final = "envoy.filters.network.tcp_proxy"
# The tracer and the access logger the mesh configures (each the only one Tulle implements).
OPENTELEMETRY_TRACER: Final = "envoy.tracers.opentelemetry"
STDOUT_ACCESS_LOG: Final = "envoy.access_loggers.stdout"
# The Listener an xds=True grpcio server asks for (the bootstrap's
# server_listener_resource_name_template; %s is the address it listens on, "127.0.0.1:50051").
GRPC_SERVER_LISTENER_TEMPLATE: Final = "xds.tulle.dev/grpc/lds/inbound/%s"
# A cluster's typed_extension_protocol_options key: its upstream protocol (HTTP/1.1, HTTP/2).
HTTP_PROTOCOL_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_TYPE: Final = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
TCP_PROXY_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
NETWORK_RBAC_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
