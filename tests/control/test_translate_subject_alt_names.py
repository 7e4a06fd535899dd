"""ServiceEntry ``subjectAltNames``: the SPIFFE ids a client accepts from the host's servers
when it speaks mTLS to them, beside its endpoints' service accounts (Istio adds both to the
service's accounts), in the cluster's UpstreamTlsContext for sidecars and the library and in
the proxyless context for grpcio; the engine refuses a server presenting another identity.
A name that is not a SPIFFE id is a WARNING and is not used."""

from __future__ import annotations

import pytest

from tulle.api import Severity, validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.tls_config import upstream_tls
from tulle.transport.mtls import PeerCheck
from tulle.xds import types

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.example.com]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
    - {address: 10.0.0.2, serviceAccount: httpbin}
  subjectAltNames:
    - spiffe://cluster.local/ns/httpbin-ns/sa/httpbin-service-account
    - httpbin.example.com
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin.example.com
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"""
ACCOUNT = "spiffe://cluster.local/ns/httpbin-ns/sa/httpbin-service-account"
ENDPOINT_ACCOUNT = "spiffe://cluster.local/ns/default/sa/httpbin"


@pytest.fixture(scope="module")
def result():
    found = validate_text(CONFIG)
    assert found.model is not None, [f.format() for f in found.findings]
    return found


def test_a_name_that_is_not_a_spiffe_id_is_a_warning(result):
    assert [(f.severity, f.field) for f in result.findings] == [
        (Severity.WARNING, "spec.subjectAltNames[1]")
    ]
    assert "is not a SPIFFE id" in result.findings[0].message


@pytest.mark.parametrize("mode", ["sidecar", "library"])
def test_the_client_accepts_the_names_and_the_endpoints_accounts_only(result, mode):
    clusters = translate(
        build_snapshot(1, result.model, ()), NodeView(mode, "default", (), "caller")
    )[types.CLUSTER]
    cluster = clusters["outbound|80||httpbin.example.com"]
    tls = upstream_tls(cluster.transport_socket)
    assert tls is not None
    assert tls.expected_identities == frozenset({ACCOUNT, ENDPOINT_ACCOUNT})
    check = PeerCheck("cluster.local", tls.expected_identities)
    for accepted in (ACCOUNT, ENDPOINT_ACCOUNT):
        check({"subjectAltName": (("URI", accepted),)}, None)
    with pytest.raises(ConnectionError, match="sa/other"):
        check({"subjectAltName": (("URI", "spiffe://cluster.local/ns/default/sa/other"),)}, None)


def test_grpcio_gets_the_same_names(result):
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    clusters = translate(
        build_snapshot(1, result.model, ()), NodeView("proxyless", "default", (), "caller")
    )[types.CLUSTER]
    cluster = next(c for name, c in clusters.items() if "httpbin.example.com" in name)
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    validation = context.common_tls_context.validation_context
    names = {m.exact for m in validation.match_subject_alt_names}
    assert names == {ACCOUNT, ENDPOINT_ACCOUNT}
