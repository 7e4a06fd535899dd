"""ServiceEntry port protocols as Istio's list has them (case-insensitive): HTTP, HTTP2, GRPC and
GRPC-WEB are HTTP; HTTPS, TLS, MONGO, MYSQL and REDIS are carried as opaque TCP (a sidecar gets
a tcp_proxy listener for them, never an HTTP one that would parse TLS or a database protocol as
HTTP); UDP and unknown names get a precise finding."""

from __future__ import annotations

from tulle.api import Severity, validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.xds import types

ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  resolution: STATIC
  ports:
    - {number: 3306, name: mysql, protocol: MySQL}
    - {number: 6379, name: redis, protocol: REDIS}
    - {number: 27017, name: mongo, protocol: mongo}
    - {number: 443, name: https, protocol: HTTPS}
    - {number: 8443, name: tls, protocol: TLS}
    - {number: 8080, name: web, protocol: GRPC-Web}
    - {number: 8081, name: h2, protocol: http2}
  endpoints: [{address: 10.0.0.5}]
"""


def test_protocols_are_carried_as_the_mesh_carries_them():
    result = validate_text(ENTRY)
    assert result.model is not None, [f.format() for f in result.findings]
    ports = {p.number: p.protocol for p in result.model.services["db.example.com"].ports}
    assert ports == {3306: "TCP", 6379: "TCP", 27017: "TCP", 443: "TCP", 8443: "TCP",
                     8080: "GRPC", 8081: "HTTP2"}  # fmt: skip
    listeners = translate(
        build_snapshot(1, result.model, ()), NodeView("sidecar", "default", (), "caller")
    )[types.LISTENER]
    for port in (3306, 6379, 27017, 443, 8443):
        (chain,) = listeners[f"db.example.com_{port}"].filter_chains
        assert [f.name for f in chain.filters] == ["envoy.filters.network.tcp_proxy"]


def test_udp_and_unknown_protocols_are_refused_by_name():
    text = ENTRY.replace("protocol: REDIS", "protocol: UDP").replace(
        "protocol: mongo", "protocol: mongodb"
    )
    findings = validate_text(text).findings
    assert [(f.severity, f.field, f.message) for f in findings] == [
        (Severity.ERROR, "spec.ports[1].protocol",
         "UDP is not carried by the mesh (Tulle's proxies carry TCP): leave the port out"),
        (Severity.ERROR, "spec.ports[2].protocol",
         "unknown protocol 'mongodb'; use one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, TCP, TLS, "
         "MONGO, MYSQL, REDIS"),
    ]  # fmt: skip
