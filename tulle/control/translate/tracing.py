"""The Mesh's tracing in a sidecar's or library's HttpConnectionManagers, in Envoy's fields as
Istio sets them: ``tracing.random_sampling`` (percent) and the ``envoy.tracers.opentelemetry``
provider, whose ``OpenTelemetryConfig`` names the workload (``service_name``) and, when the
Mesh names an OTLP/HTTP endpoint (``tracing.otlp.endpoint``), that endpoint as its
``http_service``. With no endpoint, or an OTLP/gRPC one (``protocol: grpc``, which the control
plane's trace store relays to: tulle.control.traces.forward), the provider has no service: the
data plane then sends spans to the control plane's own trace store
(``tulle.engine.tracing_config``). Proxyless gRPC clients get none."""

from __future__ import annotations

from typing import Any, Final

from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from tulle.api.model import MeshSettings
from tulle.control.translate.context import NodeView
from tulle.control.translate.protos import duration
from tulle.xds.types import OPENTELEMETRY_TRACER

OTLP_CLUSTER: Final = "tulle-otlp"  # names the endpoint for Envoy's required field; not a cluster
EXPORT_TIMEOUT: Final = 5.0


def tracing(settings: MeshSettings, view: NodeView) -> Any | None:
    """The ``tracing`` of the node's HttpConnectionManagers (None for proxyless nodes, and
    when the Mesh turns tracing off)."""
    if view.mode == "proxyless" or not settings.tracing_enabled:
        return None
    config = opentelemetry_pb2.OpenTelemetryConfig(service_name=view.workload)
    if settings.tracing_endpoint and settings.tracing_protocol == "http/protobuf":
        uri = config.http_service.http_uri
        uri.uri, uri.cluster = settings.tracing_endpoint, OTLP_CLUSTER
        uri.timeout.CopyFrom(duration(EXPORT_TIMEOUT))
    result = hcm.HttpConnectionManager.Tracing()
    result.random_sampling.value = settings.tracing_sampling
    result.provider.name = OPENTELEMETRY_TRACER
    result.provider.typed_config.Pack(config)
    return result
