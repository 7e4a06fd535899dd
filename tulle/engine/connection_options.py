"""A cluster's settings for its upstream connections and endpoints that a DestinationRule's
connection pool and load balancer give (Envoy's Cluster fields): slow start, TCP keepalive and
HTTP/2 PINGs, read from the Cluster resource."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tulle.engine.config import seconds


@dataclass(frozen=True)
class SlowStartSpec:
    """Envoy's ``slow_start_config``: an endpoint that joins ramps up over ``window`` seconds,
    its weight x max(min_percent / 100, (age / window) ^ (1 / aggression))."""

    window: float
    aggression: float = 1.0
    min_percent: float = 10.0


@dataclass(frozen=True)
class TcpKeepaliveSpec:
    """SO_KEEPALIVE, with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT where given (None: the
    OS's)."""

    time: int | None = None
    interval: int | None = None
    probes: int | None = None


@dataclass(frozen=True)
class PingSpec:
    """HTTP/2 PINGs (Envoy's ``connection_keepalive``): one every ``interval`` seconds; a
    connection whose PING is not acknowledged within ``timeout`` is closed."""

    interval: float
    timeout: float


def slow_start_of(cluster: Any) -> SlowStartSpec | None:
    """The round robin or least request balancer's slow start, if configured."""
    for holder in ("round_robin_lb_config", "least_request_lb_config"):
        if not cluster.HasField(holder):
            continue
        lb_config = getattr(cluster, holder)
        if not lb_config.HasField("slow_start_config"):
            continue
        config = lb_config.slow_start_config
        if not config.HasField("slow_start_window"):
            return None
        return SlowStartSpec(
            window=seconds(config.slow_start_window),
            aggression=(config.aggression.default_value if config.HasField("aggression") else 1.0),
            min_percent=(
                config.min_weight_percent.value if config.HasField("min_weight_percent") else 10.0
            ),
        )
    return None


def tcp_keepalive_of(cluster: Any) -> TcpKeepaliveSpec | None:
    """``upstream_connection_options.tcp_keepalive``, if set."""
    if not cluster.upstream_connection_options.HasField("tcp_keepalive"):
        return None
    given = cluster.upstream_connection_options.tcp_keepalive

    def value(name: str) -> int | None:
        return int(getattr(given, name).value) if given.HasField(name) else None

    return TcpKeepaliveSpec(
        value("keepalive_time"), value("keepalive_interval"), value("keepalive_probes")
    )


def pings_of(http2_options: Any) -> PingSpec | None:
    """An Http2ProtocolOptions' ``connection_keepalive``, if it has an interval."""
    if not http2_options.HasField("connection_keepalive"):
        return None
    keepalive = http2_options.connection_keepalive
    if not keepalive.HasField("interval"):
        return None
    return PingSpec(seconds(keepalive.interval), seconds(keepalive.timeout))


__all__ = [
    "PingSpec",
    "SlowStartSpec",
    "TcpKeepaliveSpec",
    "pings_of",
    "slow_start_of",
    "tcp_keepalive_of",
]
