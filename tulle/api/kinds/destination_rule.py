"""Istio's DestinationRule (``networking.istio.io``): traffic policy per host, subset and
port (load balancing, connection pool, outlier detection, client TLS).

Field names, defaults and meaning follow Istio's reference documentation; only the fields Tulle
implements exist, so a field Tulle would silently ignore is reported as unknown instead."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tulle.api.kinds.base import (
    INT32_MAX,
    UINT32_MAX,
    Duration,
    HeaderName,
    Host,
    Labels,
    LabelSelector,
    PositiveDuration,
    Strict,
    only_one,
    reject_repeats,
)
from tulle.api.kinds.deprecated import consecutive_errors
from tulle.api.kinds.destination_locality import (
    LocalityLoadBalancerSetting,
    ZoneAwareLoadBalancerSetting,
)
from tulle.api.kinds.destination_pool import (
    ConnectionKeepalive,
    TcpKeepalive,
    WarmupConfiguration,
)
from tulle.api.kinds.networking_common import NetworkingResource, PortSelector

MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's and grpcio's largest hash ring

# --- DestinationRule ------------------------------------------------------------------------


class HTTPCookie(Strict):
    """The cookie a consistent hash is taken over (``ttl`` makes the proxy set it)."""

    name: str = Field(min_length=1)
    path: str | None = None
    ttl: Duration | None = None


class ConsistentHash(Strict):
    """Ring hash load balancing, keyed on exactly one property of the request."""

    http_header_name: HeaderName | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: Annotated[str, Field(min_length=1)] | None = None
    minimum_ring_size: Annotated[int, Field(ge=1, le=MAX_RING_SIZE)] | None = None

    @model_validator(mode="after")
    def _one_key(self) -> ConsistentHash:
        only_one(
            self,
            "http_header_name",
            "http_cookie",
            "use_source_ip",
            "http_query_parameter_name",
            required=True,
        )
        if self.use_source_ip is False:
            raise ValueError("useSourceIp: false hashes on nothing; set it true or use another key")
        return self


class LoadBalancerSettings(Strict):
    """``simple`` algorithm or ``consistentHash``, not both (neither: Istio's default,
    LEAST_REQUEST); ``warmup`` (or the older ``warmupDurationSecs``): slow start."""

    simple: Literal["ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM"] | None = None
    consistent_hash: ConsistentHash | None = None
    warmup_duration_secs: PositiveDuration | None = None
    warmup: WarmupConfiguration | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    zone_aware_lb_setting: ZoneAwareLoadBalancerSetting | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> LoadBalancerSettings:
        only_one(self, "simple", "consistent_hash")
        # As Istio's validation: the two locality settings exclude each other.
        only_one(self, "locality_lb_setting", "zone_aware_lb_setting")
        chosen = (
            self.simple,
            self.consistent_hash,
            self.locality_lb_setting,
            self.zone_aware_lb_setting,
        )
        if chosen == (None, None, None, None) and not self.has_warmup:
            raise ValueError(
                "set one of simple, consistentHash, warmup, localityLbSetting, zoneAwareLbSetting"
            )
        return self

    @property
    def has_warmup(self) -> bool:
        """Slow start is asked for (``warmup`` or ``warmupDurationSecs``)."""
        return self.warmup is not None or self.warmup_duration_secs is not None


class TCPSettings(Strict):
    """TCP connection limits."""

    max_connections: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    connect_timeout: PositiveDuration | None = None
    tcp_keepalive: TcpKeepalive | None = None


class HTTPSettings(Strict):
    """HTTP request limits (circuit breaking) and connection reuse."""

    http1_max_pending_requests: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    http2_max_requests: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    max_requests_per_connection: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    idle_timeout: PositiveDuration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    http2_keep_alive: ConnectionKeepalive | None = Field(default=None, alias="http2KeepAlive")


class ConnectionPoolSettings(Strict):
    """Circuit-breaker limits on connections and requests to each host of a service."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Strict):
    """Eject endpoints that keep failing, for a time that grows with each ejection."""

    consecutive_5xx_errors: Annotated[int, Field(ge=0, le=UINT32_MAX)] | None = Field(
        default=None, alias="consecutive5xxErrors"
    )
    consecutive_gateway_errors: Annotated[int, Field(ge=0, le=UINT32_MAX)] | None = None
    interval: PositiveDuration | None = None
    base_ejection_time: PositiveDuration | None = None
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    min_health_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    # Deprecated (a WARNING names the new spelling): consecutive gateway errors, as Istio
    # reads it (tulle.api.kinds.deprecated).
    consecutive_errors: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _deprecated(cls, data: Any) -> Any:
        return consecutive_errors(data)


class ClientTLSSettings(Strict):
    """How the client side talks to the destination: Tulle's mTLS or plain text."""

    mode: Literal["DISABLE", "ISTIO_MUTUAL"]


class PortTrafficPolicy(Strict):
    """Traffic policy for one port of the destination, overriding the service-wide one."""

    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(Strict):
    """Load balancing, connection limits, outlier detection and TLS for a destination."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)

    @field_validator("port_level_settings")
    @classmethod
    def _unique_ports(cls, value: list[PortTrafficPolicy]) -> list[PortTrafficPolicy]:
        reject_repeats([setting.port.number for setting in value], (), "port", "port")
        return value


class Subset(Strict):
    """A named group of a service's endpoints, picked by labels (e.g. ``version: v2``)."""

    name: str = Field(min_length=1)
    labels: Labels = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Strict):
    """Policies applied to traffic for ``host`` after routing."""

    host: Host
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)
    # The client workloads (in the rule's namespace) it applies to; None: every client.
    workload_selector: LabelSelector | None = None

    @field_validator("subsets")
    @classmethod
    def _unique_subsets(cls, value: list[Subset]) -> list[Subset]:
        reject_repeats([subset.name for subset in value], (), "name", "subset name")
        return value


class DestinationRule(NetworkingResource):
    """Istio DestinationRule: subsets and traffic policy of a service."""

    KIND: ClassVar[str] = "DestinationRule"

    spec: DestinationRuleSpec
