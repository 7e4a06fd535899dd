"""Tulle's own kinds (``tulle.dev/v1alpha1``), only where Istio and the Gateway API have none:
Workload (a process of local mode), RateLimit, Fallback, and Mesh (mesh-wide settings)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from tulle.api.hosts import is_valid_host
from tulle.api.kinds.base import (
    UINT32_MAX,
    FieldError,
    Host,
    Labels,
    LabelSelector,
    PortNumber,
    PositiveDuration,
    Resource,
    Strict,
    only_one,
    reject_repeats,
)
from tulle.api.kinds.destination_locality import LocalityLoadBalancerSetting
from tulle.api.names import check_locality

TULLE_GROUP = "tulle.dev"
TULLE_VERSIONS = ("v1alpha1",)

WorkloadProtocol = Literal["HTTP", "HTTP2", "GRPC", "TCP"]


class WorkloadPort(Strict):
    """A port the workload serves; ``port`` is the service port clients call."""

    name: str = Field(min_length=1)
    port: PortNumber
    protocol: WorkloadProtocol = "HTTP"


class HTTPGetCheck(Strict):
    """Ready when ``GET path`` answers 2xx or 3xx."""

    path: str = "/"
    port: str | None = None


class TCPSocketCheck(Strict):
    """Ready when the port accepts a connection."""

    port: str | None = None


class Readiness(Strict):
    """How the local runner knows a replica is ready (as a Kubernetes readiness probe)."""

    http_get: HTTPGetCheck | None = None
    tcp_socket: TCPSocketCheck | None = None
    period: PositiveDuration = "1s"
    timeout: PositiveDuration = "1s"

    @model_validator(mode="after")
    def _one_check(self) -> Readiness:
        only_one(self, "http_get", "tcp_socket", required=True)
        return self


class WorkloadSpec(Strict):
    """A program run as ``replicas`` processes, each with ``PORT`` and the ``TULLE_*`` variables."""

    service: str | None = None
    command: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    replicas: Annotated[int, Field(ge=0)] = 1
    ports: list[WorkloadPort] = Field(default_factory=list)
    service_account: str | None = None  # the workload's name (its identity in local mode)
    labels: Labels = Field(default_factory=dict)
    mesh: Literal["sidecar", "library", "proxyless", "none"] = "sidecar"
    readiness: Readiness | None = None
    # Where its replicas run (region[/zone[/subzone]]): their endpoints' locality, and the
    # locality its callers prefer under a DestinationRule's localityLbSetting.
    locality: Annotated[str, AfterValidator(check_locality)] | None = None

    @field_validator("service")
    @classmethod
    def _service_host(cls, value: str | None) -> str | None:
        if value is not None and ("*" in value or not is_valid_host(value.lower())):
            raise ValueError(f"{value!r} is not a service host name (a DNS name, no wildcard)")
        return value

    @model_validator(mode="after")
    def _ports_consistent(self) -> WorkloadSpec:
        reject_repeats([port.name for port in self.ports], ("ports",), "name", "port name")
        reject_repeats([port.port for port in self.ports], ("ports",), "port", "port")
        if self.readiness is not None:
            check = self.readiness.http_get or self.readiness.tcp_socket
            names = {port.name for port in self.ports} | {str(port.port) for port in self.ports}
            if check is not None and check.port is not None and check.port not in names:
                kind = "httpGet" if self.readiness.http_get else "tcpSocket"
                raise FieldError(
                    ("readiness", kind, "port"),
                    f"port {check.port!r} is not among the workload's ports",
                )
            if check is not None and not self.ports:
                raise FieldError(("readiness",), "a readiness check needs a port in ports")
        return self


class TulleResource(Resource):
    """Base of the ``tulle.dev`` kinds."""

    GROUP: ClassVar[str] = TULLE_GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = TULLE_VERSIONS


class Workload(TulleResource):
    """A Tulle Workload: a service's program in local mode (``tulle up``)."""

    KIND: ClassVar[str] = "Workload"

    spec: WorkloadSpec


class RateLimitTarget(Strict):
    """Limit outbound calls to ``host`` (optionally only those of one named route)."""

    host: Host
    route: str | None = None


class TokenBucket(Strict):
    """``requests`` per ``unit``, with bursts up to ``burst`` (default: ``requests``)."""

    requests: Annotated[int, Field(ge=1, le=UINT32_MAX)]
    unit: Literal["second", "minute"] = "second"
    burst: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = None


class RateLimitSpec(Strict):
    """A local token-bucket rate limit, inbound at selected workloads or outbound to a host."""

    selector: LabelSelector | None = None
    target: RateLimitTarget | None = None
    limit: TokenBucket
    status_code: Annotated[int, Field(ge=400, le=599)] = 429

    @model_validator(mode="after")
    def _one_scope(self) -> RateLimitSpec:
        only_one(self, "selector", "target", required=True)
        return self


class RateLimit(TulleResource):
    """A Tulle RateLimit."""

    KIND: ClassVar[str] = "RateLimit"

    spec: RateLimitSpec


class FallbackTarget(Strict):
    """Where failed calls go instead: a host, on ``port`` (default: the port that was called)."""

    host: Host
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


FallbackCondition = Literal["5xx", "gateway-error", "unavailable"]


def _on_5xx() -> list[FallbackCondition]:
    return ["5xx"]


class FallbackSpec(Strict):
    """When a call to ``host`` fails (after its retries) on one of the ``when`` conditions, it is
    sent once to ``to`` instead: ``5xx`` (any 5xx answer, the mesh's own included),
    ``gateway-error`` (502, 503, 504), ``unavailable`` (no healthy endpoint, or its circuit
    breaker is open: the service was not even asked). Fault-injected answers do not fall back."""

    host: Host
    to: FallbackTarget
    when: list[FallbackCondition] = Field(default_factory=_on_5xx, min_length=1)


class Fallback(TulleResource):
    """A Tulle Fallback: neither Istio's kinds nor the Gateway API express one."""

    KIND: ClassVar[str] = "Fallback"

    spec: FallbackSpec


class MeshMtls(Strict):
    """The mesh-wide default mTLS mode (a PeerAuthentication overrides it)."""

    mode: Literal["STRICT", "PERMISSIVE", "DISABLE"] = "PERMISSIVE"


class OutboundTrafficPolicy(Strict):
    """ALLOW_ANY passes calls to unknown hosts through; REGISTRY_ONLY refuses them."""

    mode: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"


class AccessLog(Strict):
    """One line per request, JSON or text."""

    enabled: bool = True
    format: Literal["JSON", "TEXT"] = "JSON"


class OtlpExporter(Strict):
    """Where spans go besides the control plane's trace store: an OTLP collector. With
    ``protocol: http/protobuf`` (the default, as OTEL_EXPORTER_OTLP_PROTOCOL names it) sidecars
    and libraries send to ``endpoint`` themselves (OTLP/HTTP, ``/v1/traces`` when no path is
    given) instead of to the store; with ``protocol: grpc`` they send to the store, which keeps
    them and relays them to ``endpoint`` over OTLP/gRPC (``http://host:4317`` in plain text,
    ``https://`` over TLS). Without an endpoint, the store alone."""

    endpoint: str | None = None
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError as error:
            raise ValueError(f"{value!r}: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{value!r} is not an OTLP endpoint: write http://host:port or "
                "https://host:port (for an OTLP/gRPC collector, with protocol: grpc)"
            )
        return value

    @model_validator(mode="after")
    def _grpc(self) -> OtlpExporter:
        if self.protocol != "grpc":
            return self
        if self.endpoint is None:
            raise ValueError(
                "protocol grpc needs an endpoint: the OTLP/gRPC collector's http://host:4317"
            )
        if urlsplit(self.endpoint).path not in ("", "/"):
            raise ValueError(
                f"endpoint {self.endpoint!r}: an OTLP/gRPC endpoint has no path (a path such "
                "as /v1/traces is OTLP/HTTP's): write http://host:port"
            )
        return self


class Tracing(Strict):
    """Share of requests traced, in percent (Istio's default 1 %; a caller's sampled flag is
    honoured), and where spans go; ``enabled: false`` turns tracing off (Istio's
    ``meshConfig.enableTracing``): no spans, and no trace headers added or read."""

    enabled: bool = True
    sampling: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    otlp: OtlpExporter = Field(default_factory=OtlpExporter)


class PathNormalization(Strict):
    """How request paths are normalized before policy and routing (Istio's
    ``meshConfig.pathNormalization``): NONE; BASE (RFC 3986 normalization, unreserved escapes
    decoded: the default); MERGE_SLASHES (also ``//`` to ``/``); DECODE_AND_MERGE_SLASHES (also
    ``%2F`` and ``%5C`` decoded to ``/``)."""

    normalization: Literal["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] = "BASE"


class MeshSpec(Strict):
    """Mesh-wide settings."""

    trust_domain: str = "cluster.local"
    mtls: MeshMtls = Field(default_factory=MeshMtls)
    outbound_traffic_policy: OutboundTrafficPolicy = Field(default_factory=OutboundTrafficPolicy)
    access_log: AccessLog = Field(default_factory=AccessLog)
    tracing: Tracing = Field(default_factory=Tracing)
    path_normalization: PathNormalization = Field(default_factory=PathNormalization)
    # How long a workload certificate the mesh's CA issues is valid (renewed at about half).
    workload_certificate_lifetime: PositiveDuration = "24h"
    # Istio's meshConfig.h2UpgradePolicy: whether HTTP/1.1 requests go upstream over HTTP/2 to
    # HTTP ports whose DestinationRule leaves h2UpgradePolicy at DEFAULT.
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] = "DO_NOT_UPGRADE"
    # Istio's gatewayTopology.numTrustedProxies, for every workload's inbound side: how many
    # proxies in front of the mesh append to X-Forwarded-For, so where AuthorizationPolicy's
    # remoteIpBlocks / remote.ip find the original client (0: the connection's peer).
    num_trusted_proxies: Annotated[int, Field(ge=0, le=UINT32_MAX)] = 0
    # Istio's meshConfig.localityLbSetting: the locality load balancing of every host whose
    # DestinationRule sets none (and whose Service has no trafficDistribution).
    locality_lb_setting: LocalityLoadBalancerSetting | None = None

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain(cls, value: str) -> str:
        if "*" in value or not is_valid_host(value):
            raise ValueError(f"{value!r} is not a valid trust domain (a DNS name)")
        return value


class Mesh(TulleResource):
    """The one Tulle Mesh resource."""

    KIND: ClassVar[str] = "Mesh"

    spec: MeshSpec = Field(default_factory=MeshSpec)
