"""The Mesh's ``tracing.otlp``: where spans go besides the control plane's trace store. An
OTLP/HTTP collector (``protocol: http/protobuf``, the default) that the data plane sends to, or
an OTLP/gRPC one (``protocol: grpc``) that the store relays to: both validate, bad ones are
errors naming the field (``tulle validate`` as a user runs it, too), and each reaches the
translation as its own kind of provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.trace.v3 import opentelemetry_pb2
from typer.testing import CliRunner

from tulle.api import validate_text
from tulle.api.model import MeshSettings
from tulle.cli.main import app
from tulle.control.translate.context import NodeView
from tulle.control.translate.tracing import tracing

MESH = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec:
  tracing:
    sampling: 100
    otlp: {otlp}
"""


def settings(otlp: str) -> tuple[MeshSettings | None, list[str]]:
    result = validate_text(MESH.format(otlp=otlp))
    found = [f"{f.severity.name} {f.field}: {f.message}" for f in result.findings]
    return (result.model.settings if result.model else None), found


@pytest.mark.parametrize(
    ("otlp", "endpoint", "protocol"),
    [
        ("{}", "", "http/protobuf"),
        ("{endpoint: 'http://otel-collector:4318'}", "http://otel-collector:4318", "http/protobuf"),
        ("{endpoint: 'https://otel.example.com/custom/traces', protocol: http/protobuf}",
         "https://otel.example.com/custom/traces", "http/protobuf"),
        ("{endpoint: 'http://otel-collector:4317', protocol: grpc}",
         "http://otel-collector:4317", "grpc"),
        ("{endpoint: 'https://otel.example.com', protocol: grpc}",
         "https://otel.example.com", "grpc"),
    ],
)  # fmt: skip
def test_collectors_a_user_names(otlp: str, endpoint: str, protocol: str) -> None:
    mesh, found = settings(otlp)
    assert found == []
    assert mesh is not None
    assert (mesh.tracing_endpoint, mesh.tracing_protocol) == (endpoint, protocol)


@pytest.mark.parametrize(
    ("otlp", "expected"),
    [
        ("{endpoint: 'grpc://collector:4317'}",
         "spec.tracing.otlp.endpoint: 'grpc://collector:4317' is not an OTLP endpoint: write "
         "http://host:port or https://host:port (for an OTLP/gRPC collector, with protocol: grpc)"),
        ("{endpoint: 'http://collector:port'}",
         "spec.tracing.otlp.endpoint: 'http://collector:port': Port could not be cast to integer "
         "value as 'port'"),
        ("{protocol: grpc}",
         "spec.tracing.otlp: protocol grpc needs an endpoint: the OTLP/gRPC collector's "
         "http://host:4317"),
        ("{endpoint: 'http://collector:4317/v1/traces', protocol: grpc}",
         "spec.tracing.otlp: endpoint 'http://collector:4317/v1/traces': an OTLP/gRPC endpoint "
         "has no path (a path such as /v1/traces is OTLP/HTTP's): write http://host:port"),
        ("{endpoint: 'http://collector:4318', protocol: http/json}",
         "spec.tracing.otlp.protocol: must be one of 'http/protobuf' or 'grpc', got 'http/json'"),
        ("{endpoint: 'http://collector:4318', headers: {api-key: x}}",
         "spec.tracing.otlp.headers: unknown field; known fields: endpoint, protocol"),
    ],
)  # fmt: skip
def test_bad_collectors_are_errors_naming_the_field(otlp: str, expected: str) -> None:
    mesh, found = settings(otlp)
    assert mesh is None
    assert [f for f in found if f.startswith("ERROR")] == [f"ERROR {expected}"]


def test_tulle_validate_says_where(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MESH.format(otlp="{endpoint: 'http://otel-collector:4317', protocol: grpc}"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(MESH.format(otlp="{protocol: grpc}"))
    runner = CliRunner()
    accepted = runner.invoke(app, ["validate", str(good)])
    assert accepted.exit_code == 0, accepted.output
    refused = runner.invoke(app, ["validate", str(bad)])
    assert refused.exit_code == 1
    assert (
        f"{bad}:7: ERROR Mesh tulle-system/mesh: spec.tracing.otlp: protocol grpc needs an "
        "endpoint: the OTLP/gRPC collector's http://host:4317"
    ) in refused.output


@pytest.mark.parametrize(
    ("protocol", "sent"),
    [("http/protobuf", "http://otel-collector:4318"), ("grpc", "")],
)
def test_the_data_plane_sends_to_an_http_collector_and_to_the_store_for_grpc(
    protocol: str, sent: str
) -> None:
    """With an OTLP/HTTP collector the workload's provider names it; with an OTLP/gRPC one it
    names none (the data plane sends to the control plane's store, which relays)."""
    endpoint = "http://otel-collector:4318" if protocol != "grpc" else "http://otel-collector:4317"
    mesh = MeshSettings(tracing_endpoint=endpoint, tracing_protocol=protocol)  # type: ignore[arg-type]
    result = tracing(mesh, NodeView("sidecar", "default", workload="frontend"))
    assert result is not None
    config = opentelemetry_pb2.OpenTelemetryConfig()
    assert result.provider.typed_config.Unpack(config)
    assert config.service_name == "frontend"
    assert config.http_service.http_uri.uri == sent
