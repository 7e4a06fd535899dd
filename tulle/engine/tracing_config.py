"""The mesh's tracing settings as the control plane sends them to sidecars and libraries: in
each HttpConnectionManager's ``tracing`` (Envoy's fields, as Istio sets them):
``random_sampling`` (percent) and a ``provider`` named ``envoy.tracers.opentelemetry`` whose
``OpenTelemetryConfig`` names the OTLP/HTTP endpoint (``http_service.http_uri.uri``). A
provider with no ``http_service`` means the control plane's own trace store, which each
workload finds where it already reaches the control plane's HTTP API (the library's
``TULLE_SERVER``, the sidecar's ``--server``). No ``tracing`` at all: tracing is off."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from envoy.config.trace.v3 import opentelemetry_pb2

from tulle.engine.listener_filters import connection_managers
from tulle.engine.matching import ConfigError
from tulle.xds.types import OPENTELEMETRY_TRACER

CONTROL_PLANE: Final = ""  # the endpoint that means the control plane's trace store


@dataclass(frozen=True)
class TracingSettings:
    """``sampling`` in percent (0-100); ``endpoint`` the OTLP/HTTP URL spans go to
    (:data:`CONTROL_PLANE`: the control plane's store); ``service_name`` as the control plane
    names the workload (empty: the workload's own name)."""

    sampling: float
    endpoint: str = CONTROL_PLANE
    service_name: str = ""


def tracing_settings(listeners: Mapping[str, Any]) -> TracingSettings | None:
    """The mesh's tracing, from the first HttpConnectionManager of ``listeners`` that has
    ``tracing`` (the control plane sets the same in each); None when none has (tracing off).
    ConfigError (a NACK) for a provider Tulle does not implement."""
    for listener, manager in connection_managers(listeners):
        if manager.HasField("tracing"):
            return _settings(manager.tracing, listener)
    return None


def _settings(tracing: Any, listener: str) -> TracingSettings:
    sampling = tracing.random_sampling.value if tracing.HasField("random_sampling") else 100.0
    if not 0.0 <= sampling <= 100.0:
        raise ConfigError(f"listener {listener}: tracing random_sampling {sampling} is not 0-100")
    if not tracing.HasField("provider"):
        return TracingSettings(sampling)
    provider = tracing.provider
    if provider.name != OPENTELEMETRY_TRACER:
        raise ConfigError(
            f"listener {listener}: tracing provider {provider.name!r} is not supported "
            f"(only {OPENTELEMETRY_TRACER}, over OTLP/HTTP)"
        )
    config = opentelemetry_pb2.OpenTelemetryConfig()
    if provider.HasField("typed_config") and not provider.typed_config.Unpack(config):
        raise ConfigError(
            f"listener {listener}: tracing provider config is not OpenTelemetryConfig"
        )
    if config.HasField("grpc_service"):
        raise ConfigError(
            f"listener {listener}: tracing over OTLP/gRPC is not supported by the data plane "
            "(give an OTLP/HTTP endpoint)"
        )
    endpoint = config.http_service.http_uri.uri if config.HasField("http_service") else ""
    return TracingSettings(sampling, endpoint, config.service_name)
