"""The server Listeners of a proxyless gRPC node (gRFC A36), compared whole: named by the
bootstrap's template and the address the server listens on, one filter chain with an inline
non-forwarding route, the workload's AuthorizationPolicies as RBAC, and a DownstreamTlsContext
on the ``default`` certificate provider when the port is STRICT. PERMISSIVE becomes STRICT (a
grpcio server cannot tell TLS from plain text), DISABLE and ``mesh: none`` plain text; a
proxyless client without a Workload gets none, and shares one translation with its peers."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from fuzz.support.xds_checks import check_node
from tulle.api import validate_text
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import Translator, translate, view_of
from tulle.control.translate.context import NodeView
from tulle.control.translate.grpc_server import server_modes
from tulle.xds import types
from tulle.xds.node import parse_node_id

PREFIX = "xds.tulle.dev/grpc/lds/inbound/"
SERVER = NodeView("proxyless", "default", (("app", "greeter"),), "greeter")
WORKLOAD = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: greeter}}
spec:
  command: [python3, server.py]
  ports: [{{name: grpc, port: 50051, protocol: GRPC}}, {{name: db, port: 5432, protocol: TCP}}]
  {extra}
"""
ONLY_CLIENT = """\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: callers}
spec:
  selector: {matchLabels: {app: greeter}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]}]
"""
PEER_AUTHENTICATION = """\
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: greeter}}
spec: {{selector: {{matchLabels: {{app: greeter}}}}, mtls: {{mode: {mode}}}}}
"""
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
PROVIDER = {"instanceName": "default", "certificateName": "default"}
ROOTS = {"instanceName": "default", "certificateName": "ROOTCA"}


def listeners(config: str, view: NodeView = SERVER, *endpoints: Endpoint) -> dict[str, Any]:
    result = validate_text(config)
    assert result.model is not None, [f.format() for f in result.findings]
    translated = translate(build_snapshot(1, result.model, endpoints), view)
    check_node(translated, proxyless=True)  # what grpcio asks of them
    return {
        name: MessageToDict(listener)
        for name, listener in translated[types.LISTENER].items()
        if name.startswith(PREFIX)
    }


def chain(listener: dict[str, Any]) -> dict[str, Any]:
    [only] = listener["filterChains"]
    return dict(only)


def test_a_strict_server_listener_per_address():
    found = listeners(WORKLOAD.format(extra="") + ONLY_CLIENT)
    assert sorted(found) == [
        f"{PREFIX}0.0.0.0:50051",
        f"{PREFIX}127.0.0.1:50051",
        f"{PREFIX}[::]:50051",
    ]  # fmt: skip  (the TCP port has none)
    listener = found[f"{PREFIX}127.0.0.1:50051"]
    assert listener["address"] == {"socketAddress": {"address": "127.0.0.1", "portValue": 50051}}
    assert found[f"{PREFIX}[::]:50051"]["address"]["socketAddress"]["address"] == "::"
    secure = chain(listener)
    assert secure["name"] == "inbound|50051||mtls"
    assert secure["transportSocket"] == {
        "name": "envoy.transport_sockets.tls",
        "typedConfig": {
            "@type": TLS,
            "requireClientCertificate": True,
            "commonTlsContext": {
                "tlsCertificateProviderInstance": PROVIDER,
                "validationContext": {"caCertificateProviderInstance": ROOTS},
            },
        },
    }
    [manager] = secure["filters"]
    config = manager["typedConfig"]
    assert config["routeConfig"]["virtualHosts"] == [
        {
            "name": "inbound",
            "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "nonForwardingAction": {}}],
        }
    ]
    assert [f["name"] for f in config["httpFilters"]] == [
        "envoy.filters.http.rbac.allow",
        "envoy.filters.http.router",
    ]
    rules = config["httpFilters"][0]["typedConfig"]["rules"]
    client = {"principalName": {"exact": "spiffe://cluster.local/ns/default/sa/client"}}
    assert rules["policies"]["default/callers[0]"]["principals"] == [
        {"andIds": {"ids": [{"authenticated": client}]}}
    ]


def test_registered_addresses_get_a_listener_too():
    endpoint = Endpoint(
        "greeter.default.svc.cluster.local", "10.1.2.3", 50051, 50051, "GRPC", (), "greeter"
    )
    found = listeners(WORKLOAD.format(extra=""), SERVER, endpoint)
    assert f"{PREFIX}10.1.2.3:50051" in found


def test_a_replica_registered_at_a_port_of_its_own_gets_a_listener_there():
    # tulle up on loopback: each replica listens on a port of its own, registered with the
    # service port it stands for; another workload's endpoint of the service gets none.
    own = Endpoint(
        "greeter.default.svc.cluster.local", "127.0.0.1", 31234, 50051, "GRPC", (), "greeter",
        workload="greeter",
    )  # fmt: skip
    other = Endpoint(
        "greeter.default.svc.cluster.local", "127.0.0.1", 31235, 50051, "GRPC", (), "greeter",
        workload="greeter-v2",
    )  # fmt: skip
    found = listeners(WORKLOAD.format(extra=""), SERVER, own, other)
    assert f"{PREFIX}127.0.0.1:31234" in found
    assert f"{PREFIX}127.0.0.1:31235" not in found
    assert "transportSocket" in chain(found[f"{PREFIX}127.0.0.1:31234"])
    address = found[f"{PREFIX}127.0.0.1:31234"]["address"]["socketAddress"]
    assert address == {"address": "127.0.0.1", "portValue": 31234}


def test_permissive_is_strict_and_disable_is_plain_text():
    permissive = WORKLOAD.format(extra="") + PEER_AUTHENTICATION.format(mode="PERMISSIVE")
    assert "transportSocket" in chain(listeners(permissive)[f"{PREFIX}0.0.0.0:50051"])
    disable = WORKLOAD.format(extra="") + PEER_AUTHENTICATION.format(mode="DISABLE")
    plain = chain(listeners(disable)[f"{PREFIX}0.0.0.0:50051"])
    assert plain["name"] == "inbound|50051||"
    assert "transportSocket" not in plain
    outside = listeners(WORKLOAD.format(extra="mesh: none"))
    assert "transportSocket" not in chain(outside[f"{PREFIX}0.0.0.0:50051"])


def test_server_modes_for_proxy_status():
    result = validate_text(WORKLOAD.format(extra=""))
    assert result.model is not None
    translated = translate(build_snapshot(1, result.model, ()), SERVER)
    sent = {n: r for n, r in translated[types.LISTENER].items() if "127.0.0.1" in n}
    assert server_modes(sent) == {"127.0.0.1:50051": "STRICT"}
    assert server_modes({}) == {}


def test_clients_without_a_workload_get_none_and_share_a_translation():
    result = validate_text(WORKLOAD.format(extra=""))
    assert result.model is not None
    snapshot = build_snapshot(1, result.model, ())
    a = parse_node_id("proxyless~127.0.0.1~a-0.default~default.svc.cluster.local")
    b = parse_node_id("proxyless~127.0.0.1~b-0.default~default.svc.cluster.local")
    server = parse_node_id("proxyless~127.0.0.1~greeter-0.default~default.svc.cluster.local")
    assert view_of(snapshot, a) == view_of(snapshot, b) == NodeView("proxyless", "default")
    assert view_of(snapshot, server).workload == "greeter"
    translator = Translator()
    client = translator.resources(snapshot, a)
    assert client is translator.resources(snapshot, b)
    assert not any(name.startswith(PREFIX) for name in client[types.LISTENER])
    assert any(
        name.startswith(PREFIX) for name in translator.resources(snapshot, server)[types.LISTENER]
    )
