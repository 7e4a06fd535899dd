"""mTLS in the translated resources, compared with the shapes Istio generates: endpoints in the
mesh, auto mTLS and DestinationRule TLS on clusters (sidecar, library and proxyless forms),
and PeerAuthentication on the inbound listener."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from fuzz.support.checks import CheckError
from fuzz.support.xds_checks import check_grpc_tls, check_node
from tulle.api import validate_text
from tulle.client.registration import Registration
from tulle.control.registry import Endpoint, endpoint_from_dict
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.local.plan import plan_replica
from tulle.local.registrations import registrations
from tulle.xds import types

WEB = "web.default.svc.cluster.local"
DB = "db.default.svc.cluster.local"
MESH = (("security.istio.io/tlsMode", "istio"),)
SIDECAR = NodeView("sidecar", "default")
LIBRARY = NodeView("library", "default")
PROXYLESS = NodeView("proxyless", "default")
ADS = {"ads": {}, "resourceApiVersion": "V3"}
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
RAW_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"


def endpoint(
    address: str,
    account: str = "web",
    labels: tuple[tuple[str, str], ...] = MESH,
    service: str = WEB,
    port: int = 8080,
    protocol: str = "HTTP",
    namespace: str = "default",
) -> Endpoint:
    return Endpoint(service, address, 9000, port, protocol, labels, account, namespace=namespace)


def resources(config: str = "", endpoints: tuple[Endpoint, ...] = (), view: NodeView = SIDECAR):
    result = validate_text(config or "")
    assert result.model is not None, [f.format() for f in result.findings]
    translated = translate(build_snapshot(1, result.model, endpoints), view)
    # What stock clients ask of the resources (protoc-gen-validate rules, grpcio's checks).
    check_node(translated, view.mode == "proxyless")
    return translated


def cluster(translated: Any, name: str) -> dict[str, Any]:
    return MessageToDict(translated[types.CLUSTER][name])


def sidecar_context(sans: list[str], sni: str, alpn: list[str]) -> dict[str, Any]:
    """Istio's UpstreamTlsContext for an in-mesh destination."""
    return {
        "@type": TLS_TYPE,
        "commonTlsContext": {
            "alpnProtocols": alpn,
            "tlsCertificateSdsSecretConfigs": [{"name": "default", "sdsConfig": ADS}],
            "combinedValidationContext": {
                "defaultValidationContext": {
                    "matchTypedSubjectAltNames": [
                        {"sanType": "URI", "matcher": {"exact": san}} for san in sans
                    ]
                },
                "validationContextSdsSecretConfig": {"name": "ROOTCA", "sdsConfig": ADS},
            },
        },
        "sni": sni,
    }


def proxyless_context(sans: list[str]) -> dict[str, Any]:
    """The gRFC A29 form: certificate provider instances, ``match_subject_alt_names``."""
    return {
        "@type": TLS_TYPE,
        "commonTlsContext": {
            "tlsCertificateProviderInstance": {
                "instanceName": "default",
                "certificateName": "default",
            },
            "validationContext": {
                "caCertificateProviderInstance": {
                    "instanceName": "default",
                    "certificateName": "ROOTCA",
                },
                "matchSubjectAltNames": [{"exact": san} for san in sans],
            },
        },
    }


def auto_matches(context: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": "tlsMode-istio",
            "match": {"tlsMode": "istio"},
            "transportSocket": {"name": "envoy.transport_sockets.tls", "typedConfig": context},
        },
        {
            "name": "tlsMode-disabled",
            "match": {},
            "transportSocket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typedConfig": {"@type": RAW_TYPE},
            },
        },
    ]


# --- endpoints ------------------------------------------------------------------------------


def test_an_endpoint_in_the_mesh_carries_istios_transport_socket_match():
    translated = resources(endpoints=(endpoint("10.0.0.1"), endpoint("10.0.0.2", labels=())))
    (group,) = MessageToDict(translated[types.ENDPOINT][f"outbound|8080||{WEB}"])["endpoints"]
    metadata = {
        e["endpoint"]["address"]["socketAddress"]["address"]: e.get("metadata", {})
        for e in group["lbEndpoints"]
    }
    assert metadata == {
        "10.0.0.1": {"filterMetadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}},
        "10.0.0.2": {},
    }


# --- client side: sidecar and library -------------------------------------------------------


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


DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
      - port: {number: 9090}
        tls: {mode: DISABLE}
  subsets:
    - name: v1
      labels: {version: v1}
    - name: old
      labels: {version: old}
      trafficPolicy:
        tls: {mode: DISABLE}
        portLevelSettings:
          - port: {number: 9090}
            tls: {mode: ISTIO_MUTUAL}
    - name: auto
      labels: {version: auto}
      trafficPolicy: {loadBalancer: {simple: RANDOM}}
"""


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


def peer_authentication(name: str, namespace: str, mode: str, extra: str = "") -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  mtls: {{mode: {mode}}}
{extra}---
"""


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


# --- client side: proxyless gRPC -------------------------------------------------------------


def test_proxyless_auto_mtls_when_every_endpoint_is_in_the_mesh():
    config = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""
    translated = resources(
        config,
        (
            endpoint("10.0.0.1", "web", (*MESH, ("version", "v1"))),
            endpoint("10.0.0.2", "web2", (("version", "v2"),)),
        ),
        PROXYLESS,
    )
    sans = ["spiffe://cluster.local/ns/default/sa/web", "spiffe://cluster.local/ns/default/sa/web2"]
    v1 = cluster(translated, f"outbound|8080|v1|{WEB}")
    assert v1["transportSocket"] == {
        "name": "envoy.transport_sockets.tls",
        "typedConfig": proxyless_context(sans),
    }
    assert "transportSocketMatches" not in v1
    # One endpoint outside the mesh: grpcio cannot choose per endpoint, so plain text.
    assert "transportSocket" not in cluster(translated, f"outbound|8080||{WEB}")
    assert "transportSocket" not in cluster(translated, f"outbound|8080|v2|{WEB}")


def test_proxyless_follows_the_destination_rule():
    translated = resources(
        DESTINATION_RULE,
        (endpoint("10.0.0.1", labels=()), endpoint("10.0.0.2", port=9090)),
        PROXYLESS,
    )
    sans = ["spiffe://cluster.local/ns/default/sa/web"]
    found = cluster(translated, f"outbound|8080||{WEB}")  # ISTIO_MUTUAL, even out of the mesh
    assert found["transportSocket"]["typedConfig"] == proxyless_context(sans)
    assert "transportSocket" not in cluster(translated, f"outbound|9090||{WEB}")  # DISABLE


def test_proxyless_cluster_without_endpoints_is_plain_text():
    config = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{number: 8080, protocol: HTTP, name: http}]
  location: MESH_INTERNAL
  resolution: STATIC
"""
    assert "transportSocket" not in cluster(
        resources(config, view=PROXYLESS), f"outbound|8080||{WEB}"
    )


def test_the_sidecar_forms_are_what_grpcio_would_not_use():
    """The grpcio checks the proxyless clusters pass (above) catch the sidecar's forms: grpcio
    ignores transport_socket_matches and NACKs SDS."""
    endpoints = (endpoint("10.0.0.1"), endpoint("10.0.0.2", port=9090))
    sidecar = resources(DESTINATION_RULE, endpoints)[types.CLUSTER]
    with pytest.raises(CheckError, match=r"xds\.grpc-socket-matches"):
        check_grpc_tls(resources(endpoints=endpoints)[types.CLUSTER][f"outbound|8080||{WEB}"])
    with pytest.raises(CheckError, match=r"xds\.grpc-tls-unsupported"):
        check_grpc_tls(sidecar[f"outbound|8080||{WEB}"])
    check_grpc_tls(sidecar[f"outbound|9090||{WEB}"])  # plain text: nothing to say


# --- server side ----------------------------------------------------------------------------

CART = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: cart}
spec:
  command: [cart]
  ports: [{name: http, port: 8080}, {name: db, port: 5432, protocol: TCP}]
  labels: {tier: backend}
---
"""
CART_NODE = NodeView("sidecar", "default", (), "cart")


def inbound(config: str, view: NodeView = CART_NODE) -> dict[str, Any]:
    return MessageToDict(resources(CART + config, view=view)[types.LISTENER]["virtualInbound"])


def chains(listener: dict[str, Any]) -> list[tuple[int, str]]:
    return [
        (c["filterChainMatch"]["destinationPort"], c["filterChainMatch"]["transportProtocol"])
        for c in listener["filterChains"]
    ]


DOWNSTREAM = {
    "name": "envoy.transport_sockets.tls",
    "typedConfig": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "commonTlsContext": {
            "alpnProtocols": ["h2", "http/1.1"],
            "tlsCertificateSdsSecretConfigs": [{"name": "default", "sdsConfig": ADS}],
            "combinedValidationContext": {
                "defaultValidationContext": {},
                "validationContextSdsSecretConfig": {"name": "ROOTCA", "sdsConfig": ADS},
            },
        },
        "requireClientCertificate": True,
    },
}


def test_permissive_by_default_an_mtls_chain_and_a_plain_one_per_port():
    listener = inbound("")
    assert listener["listenerFilters"] == [
        {
            "name": "envoy.filters.listener.tls_inspector",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
            },
        }
    ]
    assert chains(listener) == [
        (8080, "tls"),
        (8080, "raw_buffer"),
        (5432, "tls"),
        (5432, "raw_buffer"),
    ]
    secure, plain = listener["filterChains"][:2]
    assert secure["transportSocket"] == DOWNSTREAM
    assert "transportSocket" not in plain
    assert (secure["name"], plain["name"]) == ("inbound|8080||mtls", "inbound|8080||")
    assert secure["filters"] == plain["filters"]
    assert secure["metadata"] == plain["metadata"]


def test_strict_keeps_only_the_mtls_chains_and_disable_only_the_plain_ones():
    strict = inbound(peer_authentication("all", "default", "STRICT"))
    assert chains(strict) == [(8080, "tls"), (5432, "tls")]
    disabled = inbound(peer_authentication("all", "default", "DISABLE"))
    assert chains(disabled) == [(8080, "raw_buffer"), (5432, "raw_buffer")]
    assert all("transportSocket" not in c for c in disabled["filterChains"])


def test_port_level_mtls_of_the_workload_policy():
    config = peer_authentication(
        "cart", "default", "STRICT",
        "  selector: {matchLabels: {app: cart}}\n  portLevelMtls: {5432: {mode: PERMISSIVE}}\n",
    )  # fmt: skip
    assert chains(inbound(config)) == [(8080, "tls"), (5432, "tls"), (5432, "raw_buffer")]


SELECT_CART = "  selector: {matchLabels: {app: cart}}\n"
SELECT_OTHER = "  selector: {matchLabels: {app: other}}\n"


def mesh(mode: str) -> str:
    return f"""\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec: {{mtls: {{mode: {mode}}}}}
---
"""


# Istio's precedence: workload > namespace > mesh-wide (root namespace) > the Mesh's default;
# UNSET inherits the level above; portLevelMtls of the workload policy per port.
PRECEDENCE = [
    ("nothing: the Mesh default PERMISSIVE", "", "PERMISSIVE", "PERMISSIVE"),
    ("the Mesh default", mesh("STRICT"), "STRICT", "STRICT"),
    ("mesh-wide policy over the Mesh default",
     mesh("DISABLE") + peer_authentication("m", "tulle-system", "STRICT"), "STRICT", "STRICT"),
    ("istio-system is a root namespace too",
     peer_authentication("m", "istio-system", "STRICT"), "STRICT", "STRICT"),
    ("namespace policy over the mesh-wide one",
     peer_authentication("m", "tulle-system", "STRICT")
     + peer_authentication("n", "default", "DISABLE"), "DISABLE", "DISABLE"),
    ("another namespace's policy does not apply",
     peer_authentication("n", "shop", "STRICT"), "PERMISSIVE", "PERMISSIVE"),
    ("workload policy over the namespace one",
     peer_authentication("n", "default", "DISABLE")
     + peer_authentication("w", "default", "STRICT", SELECT_CART), "STRICT", "STRICT"),
    ("a selector that does not match",
     peer_authentication("w", "default", "STRICT", SELECT_OTHER), "PERMISSIVE", "PERMISSIVE"),
    ("a root-namespace policy with a selector is ignored",
     peer_authentication("w", "tulle-system", "STRICT", SELECT_CART), "PERMISSIVE", "PERMISSIVE"),
    ("UNSET workload policy inherits the namespace's",
     peer_authentication("n", "default", "STRICT")
     + peer_authentication("w", "default", "UNSET", SELECT_CART), "STRICT", "STRICT"),
    ("UNSET namespace policy inherits the mesh-wide one",
     peer_authentication("m", "tulle-system", "DISABLE")
     + peer_authentication("n", "default", "UNSET"), "DISABLE", "DISABLE"),
    ("port level over the workload's mode",
     peer_authentication("w", "default", "STRICT",
                         SELECT_CART + "  portLevelMtls: {5432: {mode: DISABLE}}\n"),
     "STRICT", "DISABLE"),
    ("UNSET port level is the workload's resolved mode",
     peer_authentication("n", "default", "DISABLE")
     + peer_authentication("w", "default", "UNSET",
                           SELECT_CART + "  portLevelMtls: {5432: {mode: UNSET}}\n"),
     "DISABLE", "DISABLE"),
]  # fmt: skip

_MODES = {
    "STRICT": ["tls"],
    "PERMISSIVE": ["tls", "raw_buffer"],
    "DISABLE": ["raw_buffer"],
}


@pytest.mark.parametrize(
    ("config", "http_mode", "tcp_mode"),
    [case[1:] for case in PRECEDENCE],
    ids=[case[0] for case in PRECEDENCE],
)
def test_peer_authentication_precedence(config, http_mode, tcp_mode):
    expected = [(8080, t) for t in _MODES[http_mode]] + [(5432, t) for t in _MODES[tcp_mode]]
    assert chains(inbound(config)) == expected


def test_proxyless_nodes_have_no_inbound_listener():
    listeners = resources(CART + peer_authentication("n", "default", "STRICT"), view=PROXYLESS)
    assert "virtualInbound" not in listeners[types.LISTENER]


WORKLOADS = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  command: [web]
  ports: [{name: http, port: 8080}]
  mesh: sidecar
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: legacy}
spec:
  service: web
  command: [legacy]
  ports: [{name: http, port: 8080}]
  mesh: none
"""


def test_what_the_runner_and_the_library_register_says_who_terminates_mtls():
    result = validate_text(WORKLOADS)
    assert result.model is not None
    ports = iter(range(20000, 20100))
    bodies = [
        body
        for workload in result.model.workloads
        for body in registrations(
            plan_replica(workload, 0, ("127.0.0.1:15010", "http://127.0.0.1:15014"), ports.__next__)
        )
    ]
    library = Registration("http://cp", "web", "default", "127.0.0.1", 9999, "lib", 8080)
    bodies.append(library.body())
    endpoints = tuple(endpoint_from_dict(body) for body in bodies)
    translated = translate(build_snapshot(1, result.model, endpoints), SIDECAR)
    (group,) = MessageToDict(translated[types.ENDPOINT][f"outbound|8080||{WEB}"])["endpoints"]
    in_mesh = {
        e["endpoint"]["address"]["socketAddress"]["portValue"]: "envoy.transport_socket_match"
        in e.get("metadata", {}).get("filterMetadata", {})
        for e in group["lbEndpoints"]
    }
    # The sidecar's replica: its callers speak mTLS. Not the legacy workload, and not a
    # library app (it does not terminate TLS yet: docs/security.md), registered by the runner
    # or by itself.
    assert sorted(in_mesh.values()) == [False, False, True]
    assert in_mesh[9999] is False
