"""The Mesh's tracing as it reaches the data plane (its validation is
tests/api/test_mesh_tracing.py's): translated into each HttpConnectionManager's ``tracing``
(sampling in percent, the OpenTelemetry provider with the OTLP endpoint), read back by the
sidecar and the library; a provider the data plane cannot use is refused (a NACK), never
ignored."""

from __future__ import annotations

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from tests.engine.conftest import HOST, workload
from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.matching import ConfigError
from tulle.engine.tracing_config import TracingSettings, tracing_settings
from tulle.xds import types
from tulle.xds.types import HCM_FILTER


def mesh(tracing: str) -> str:
    return f"""\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec: {{tracing: {tracing}}}
---
"""


def settings(config: str, mode: str = "sidecar") -> TracingSettings | None:
    result = validate_text(config, known_hosts=[HOST])
    assert result.model is not None, [f.format() for f in result.findings]
    view = NodeView(mode, "default", workload="v1")  # type: ignore[arg-type]
    resources = translate(build_snapshot(1, result.model, ()), view)
    return tracing_settings(resources[types.LISTENER])


def test_istio_s_default_one_percent_to_the_control_plane_s_store() -> None:
    assert settings(workload("v1")) == TracingSettings(1.0, "", "v1")
    assert settings(workload("v1"), mode="library") == TracingSettings(1.0, "", "v1")


def test_the_mesh_s_sampling_and_collector_reach_every_listener() -> None:
    config = workload("v1") + mesh("{sampling: 100, otlp: {endpoint: 'http://otel:4318'}}")
    result = validate_text(config, known_hosts=[HOST])
    assert result.model is not None
    resources = translate(
        build_snapshot(1, result.model, ()), NodeView("sidecar", "default", workload="v1")
    )
    managers = 0
    for listener in resources[types.LISTENER].values():
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                if network_filter.name == HCM_FILTER:
                    manager = hcm.HttpConnectionManager()
                    network_filter.typed_config.Unpack(manager)
                    assert manager.tracing.random_sampling.value == 100.0
                    managers += 1
    assert managers >= 3  # outbound port, HTTP proxy, inbound
    assert settings(config) == TracingSettings(100.0, "http://otel:4318", "v1")


def test_proxyless_grpc_clients_get_no_tracing() -> None:
    assert settings(workload("v1"), mode="proxyless") is None


@pytest.mark.parametrize("mode", ["sidecar", "library"])
def test_a_mesh_that_turns_tracing_off_sends_no_tracing(mode: str) -> None:
    config = workload("v1") + mesh("{enabled: false, sampling: 100}")
    assert settings(config, mode) is None


def listener_with(tracing: object) -> dict[str, object]:
    manager = hcm.HttpConnectionManager(stat_prefix="x")
    manager.tracing.CopyFrom(tracing)
    listener = listener_pb2.Listener(name="0.0.0.0_8080")
    chain = listener.filter_chains.add()
    chain.filters.add(name=HCM_FILTER).typed_config.Pack(manager)
    return {listener.name: listener}


def test_a_provider_the_data_plane_cannot_use_is_a_nack() -> None:
    zipkin = hcm.HttpConnectionManager.Tracing()
    zipkin.provider.name = "envoy.tracers.zipkin"
    zipkin.provider.typed_config.Pack(zipkin_pb2.ZipkinConfig())
    with pytest.raises(ConfigError, match=r"envoy\.tracers\.zipkin.*not supported"):
        tracing_settings(listener_with(zipkin))
    grpc = hcm.HttpConnectionManager.Tracing()
    grpc.provider.name = "envoy.tracers.opentelemetry"
    config = opentelemetry_pb2.OpenTelemetryConfig()
    config.grpc_service.envoy_grpc.cluster_name = "otel"
    grpc.provider.typed_config.Pack(config)
    with pytest.raises(ConfigError, match="OTLP/gRPC is not supported"):
        tracing_settings(listener_with(grpc))
