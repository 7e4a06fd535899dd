"""What a DestinationRule asks of the upstream connections themselves, as Envoy's Cluster
fields (as Istio's cluster builder writes them): slow start (``warmup``) as the round robin or
least request ``slow_start_config``, ``tcpKeepalive`` as ``upstream_connection_options``,
``h2UpgradePolicy`` as an explicit HTTP/2 upstream, ``http2KeepAlive`` as the HTTP/2 options'
``connection_keepalive``."""

from __future__ import annotations

from typing import Any, Literal

from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from tulle.api.model import ConnectionPool, LoadBalancer
from tulle.control.translate.protos import duration, uint32

# Ports that carry HTTP (Istio's Protocol.IsHTTP), and those of them that are HTTP/2 already.
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
HTTP2_PROTOCOLS = frozenset({"GRPC", "GRPC-WEB", "HTTP2"})


def slow_start(cluster: Any, balancer: LoadBalancer) -> None:
    """``warmup``: Envoy's slow start on the round robin or least request balancer (the
    others have none; the validator warns of a warmup beside them)."""
    warmup = balancer.warmup
    if warmup is None or balancer.policy not in ("ROUND_ROBIN", "LEAST_REQUEST"):
        return
    config = (
        cluster.round_robin_lb_config
        if balancer.policy == "ROUND_ROBIN"
        else cluster.least_request_lb_config
    ).slow_start_config
    config.slow_start_window.CopyFrom(duration(warmup.duration))
    config.aggression.default_value = warmup.aggression
    config.aggression.runtime_key = "upstream.slow_start.aggression"  # Envoy requires one
    config.min_weight_percent.value = warmup.minimum_percent


def tcp_keepalive(cluster: Any, pool: ConnectionPool) -> None:
    """``tcpKeepalive``: SO_KEEPALIVE on the cluster's upstream connections, with the times
    and probe count given (the OS's for those left out)."""
    keepalive = pool.tcp_keepalive
    if keepalive is None:
        return
    options = cluster.upstream_connection_options.tcp_keepalive
    options.SetInParent()
    if keepalive.time is not None:
        options.keepalive_time.CopyFrom(uint32(keepalive.time))
    if keepalive.interval is not None:
        options.keepalive_interval.CopyFrom(uint32(keepalive.interval))
    if keepalive.probes is not None:
        options.keepalive_probes.CopyFrom(uint32(keepalive.probes))


def upgrades(
    protocol: str, pool: ConnectionPool, mesh_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"]
) -> bool:
    """Whether HTTP/1.1 requests go upstream over HTTP/2 (Istio's shouldH2Upgrade): the
    rule's UPGRADE always; else the Mesh's UPGRADE, on HTTP ports, unless the rule says
    DO_NOT_UPGRADE."""
    if pool.h2_upgrade_policy == "UPGRADE":
        return True
    if protocol not in HTTP_PROTOCOLS or pool.h2_upgrade_policy == "DO_NOT_UPGRADE":
        return False
    return mesh_policy == "UPGRADE"


def upstream_protocol(protocol: str, http2: bool, pool: ConnectionPool) -> Any:
    """The cluster's HttpProtocolOptions: HTTP/2 for gRPC and HTTP2 ports and where ``http2``
    (an h2 upgrade), HTTP/1.1 for HTTP ones, the downstream protocol for the rest; HTTP/2 PINGs
    (``http2KeepAlive``) wherever HTTP/2 may be spoken upstream."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if http2 or protocol in HTTP2_PROTOCOLS:
        h2 = options.explicit_http_config.http2_protocol_options
        h2.SetInParent()
    elif protocol == "HTTP":
        options.explicit_http_config.http_protocol_options.SetInParent()
        return options
    else:
        h2 = options.use_downstream_protocol_config.http2_protocol_options
        options.use_downstream_protocol_config.SetInParent()
    pings = pool.http2_keepalive
    if pings is not None:
        h2.connection_keepalive.interval.CopyFrom(duration(pings.interval))
        h2.connection_keepalive.timeout.CopyFrom(duration(pings.timeout))
    return options


__all__ = ["slow_start", "tcp_keepalive", "upgrades", "upstream_protocol"]
