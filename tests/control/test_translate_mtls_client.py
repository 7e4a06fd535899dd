"""mTLS in the translated resources, compared with the shapes Istio generates: the client side of
sidecars and libraries: auto mTLS by transport-socket matches, ALPN and SNI, DestinationRule TLS
per subset and port, external services, namespaces that disable mTLS."""

from __future__ import annotations

import pytest
from google.protobuf.json_format import MessageToDict

from tests.control.mtls_resources import (
    DB,
    DESTINATION_RULE,
    LIBRARY,
    MESH,
    SIDECAR,
    WEB,
    auto_matches,
    cluster,
    endpoint,
    peer_authentication,
    resources,
    sidecar_context,
)
from tulle.xds import types


@pytest.mark.parametrize("view", [SIDECAR, LIBRARY])
def test_auto_mtls_by_transport_socket_matches(view):
    translated = resources(
        endpoints=(
            endpoint("10.0.0.1", "web"),
            endpoint("10.0.0.2", "web-canary"),
            endpoint("10.0.0.3", "legacy", labels=()),  # outside the mesh: plain text
            endpoint("10.0.0.4", "web", namespace="other"),
        ),
        view=view,
    )
    found = cluster(translated, f"outbound|8080||{WEB}")
    sans = [
        "spiffe://cluster.local/ns/default/sa/legacy",
        "spiffe://cluster.local/ns/default/sa/web",
        "spiffe://cluster.local/ns/default/sa/web-canary",
        "spiffe://cluster.local/ns/other/sa/web",
    ]
    alpn = ["istio-peer-exchange", "istio", "http/1.1"]
    context = sidecar_context(sans, f"outbound_.8080_._.{WEB}", alpn)
    assert found["transportSocketMatches"] == auto_matches(context)
    assert "transportSocket" not in found


def test_alpn_follows_the_ports_protocol_and_sni_names_the_subset():
    config = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  subsets: [{name: primary, labels: {role: primary}}]
"""
    translated = resources(
        config,
        (
            endpoint("10.0.0.1", protocol="GRPC", port=50051),
            endpoint("10.0.0.2", "db", (*MESH, ("role", "primary")), DB, 5432, "TCP"),
        ),
    )
    grpc = cluster(translated, f"outbound|50051||{WEB}")["transportSocketMatches"][0]
    context = grpc["transportSocket"]["typedConfig"]
    assert context["commonTlsContext"]["alpnProtocols"] == ["istio-peer-exchange", "istio", "h2"]
    tcp = cluster(translated, f"outbound|5432|primary|{DB}")["transportSocketMatches"][0]
    context = tcp["transportSocket"]["typedConfig"]
    assert context["commonTlsContext"]["alpnProtocols"] == ["istio-peer-exchange", "istio"]
    assert context["sni"] == f"outbound_.5432_.primary_.{DB}"


def test_destination_rule_tls_mode_per_subset_and_port_as_istio_layers_it():
    translated = resources(
        DESTINATION_RULE,
        (endpoint("10.0.0.1", labels=()), endpoint("10.0.0.2", port=9090, labels=())),
    )
    sans = ["spiffe://cluster.local/ns/default/sa/web"]

    def socket(name: str) -> tuple[str | None, str | None]:
        found = cluster(translated, name)
        assert "transportSocketMatches" not in found
        if "transportSocket" not in found:
            return None, None
        return found["transportSocket"]["name"], found["transportSocket"]["typedConfig"]["sni"]

    tls = "envoy.transport_sockets.tls"
    # ISTIO_MUTUAL: one transport socket, for endpoints in the mesh or not.
    assert socket(f"outbound|8080||{WEB}") == (tls, f"outbound_.8080_._.{WEB}")
    assert socket(f"outbound|8080|v1|{WEB}") == (tls, f"outbound_.8080_.v1_.{WEB}")
    assert socket(f"outbound|8080|auto|{WEB}") == (tls, f"outbound_.8080_.auto_.{WEB}")
    # The rule's port 9090 says DISABLE; the subset's DISABLE, and its own port 9090 back on.
    assert socket(f"outbound|9090||{WEB}") == (None, None)
    assert socket(f"outbound|8080|old|{WEB}") == (None, None)
    assert socket(f"outbound|9090|old|{WEB}") == (tls, f"outbound_.9090_.old_.{WEB}")
    context = cluster(translated, f"outbound|8080||{WEB}")["transportSocket"]["typedConfig"]
    assert context == sidecar_context(
        sans, f"outbound_.8080_._.{WEB}", ["istio-peer-exchange", "istio", "http/1.1"]
    )


EXTERNAL = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, protocol: TLS, name: tls}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 192.0.2.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm}
spec:
  hosts: [vm.default.svc.cluster.local]
  ports: [{number: 8080, protocol: HTTP, name: http}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
    - {address: 192.0.2.2, serviceAccount: vm, labels: {security.istio.io/tlsMode: istio}}
    - {address: 192.0.2.3}
"""


def test_external_services_stay_plain_text_and_service_entry_endpoints_can_join():
    translated = resources(EXTERNAL)
    assert "transportSocketMatches" not in cluster(translated, "outbound|443||api.example.com")
    assert "transportSocket" not in cluster(translated, "outbound|443||api.example.com")
    internal = cluster(translated, "outbound|8080||vm.default.svc.cluster.local")
    context = internal["transportSocketMatches"][0]["transportSocket"]["typedConfig"]
    sans = context["commonTlsContext"]["combinedValidationContext"]["defaultValidationContext"]
    assert sans["matchTypedSubjectAltNames"] == [
        {"sanType": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/vm"}}
    ]
    (group,) = MessageToDict(
        translated[types.ENDPOINT]["outbound|8080||vm.default.svc.cluster.local"]
    )["endpoints"]
    assert [bool(e.get("metadata")) for e in group["lbEndpoints"]] == [True, False]


def test_auto_mtls_is_off_towards_a_namespace_that_disables_it():
    # Istio's BestEffortInferServiceMTLSMode: namespace, then mesh-wide policies.
    endpoints = (endpoint("10.0.0.1"), endpoint("10.0.0.2", service=DB, port=5432))
    config = peer_authentication("plain", "default", "DISABLE")
    translated = resources(config, endpoints)
    assert "transportSocketMatches" not in cluster(translated, f"outbound|8080||{WEB}")
    mesh_off = peer_authentication("mesh", "tulle-system", "DISABLE")
    translated = resources(mesh_off + peer_authentication("mutual", "default", "STRICT"), endpoints)
    assert "transportSocketMatches" in cluster(translated, f"outbound|8080||{WEB}")
    # A workload policy is not a service's mode (Istio leaves it out too).
    workload = peer_authentication(
        "web", "default", "DISABLE", "  selector: {matchLabels: {app: web}}\n"
    )
    translated = resources(workload, endpoints)
    assert "transportSocketMatches" in cluster(translated, f"outbound|8080||{WEB}")
