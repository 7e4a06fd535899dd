"""ServiceEntry endpoints on Unix domain sockets (``unix:///path``) as Istio validates them
(resolution STATIC, no endpoint ports, exactly one service port, an absolute path), sent over
EDS as an Envoy pipe address and compiled by the engine as ``unix:///path`` with port 0; a
proxyless node gets none (grpcio reads socket addresses only)."""

from __future__ import annotations

import pytest

from tulle.api import Severity, validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.cluster_config import compile_endpoints
from tulle.xds import types

ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: uds}
spec:
  hosts: [example.unix.local]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: "unix:///var/run/example/socket"}]
"""
CLUSTER = "outbound|80||example.unix.local"


def test_the_endpoint_is_a_pipe_that_the_engine_reads():
    result = validate_text(ENTRY)
    assert result.model is not None, [f.format() for f in result.findings]
    snapshot = build_snapshot(1, result.model, ())
    sidecar = translate(snapshot, NodeView("sidecar", "default", (), "caller"))
    assignment = sidecar[types.ENDPOINT][CLUSTER]
    (endpoint,) = compile_endpoints(assignment)
    assert (endpoint.address, endpoint.port, endpoint.key) == (
        "unix:///var/run/example/socket", 0, "unix:///var/run/example/socket"
    )  # fmt: skip
    proxyless = translate(snapshot, NodeView("proxyless", "default", (), "caller"))
    assert compile_endpoints(proxyless[types.ENDPOINT][CLUSTER]) == ()


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("resolution: STATIC", "resolution: DNS", "spec.endpoints[0].address", "needs resolution STATIC"),
        ('"unix:///var/run/example/socket"}', '"unix:///var/run/example/socket", ports: {http: 8080}}',
         "spec.endpoints[0].ports", "has no ports"),
        ("ports: [{number: 80, name: http, protocol: HTTP}]",
         "ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: b, protocol: TCP}]",
         "spec.ports", "exactly 1 port"),
        ("unix:///var/run", "unix://var/run", "spec.endpoints[0].address", "an absolute path"),
    ],
)  # fmt: skip
def test_what_istio_refuses_is_refused(old: str, new: str, field: str, message: str):
    assert ENTRY.count(old) == 1
    errors = [
        f for f in validate_text(ENTRY.replace(old, new)).findings if f.severity is Severity.ERROR
    ]
    assert [f.field for f in errors] == [field], [f.format() for f in errors]
    assert message in errors[0].message
