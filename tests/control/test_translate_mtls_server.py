"""mTLS in the translated resources, compared with the shapes Istio generates: the server side,
PeerAuthentication on the inbound listener (PERMISSIVE, STRICT, DISABLE, port-level, precedence),
and none for proxyless nodes."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from tests.control.mtls_resources import (
    ADS,
    PROXYLESS,
    peer_authentication,
    resources,
)
from tulle.control.translate.context import NodeView
from tulle.xds import types

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
