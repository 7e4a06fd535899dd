"""mTLS config as the data plane compiles it: per endpoint ``tls`` (None or UpstreamTls: SNI,
expected SPIFFE ids, ALPN), decided once per config from the cluster's transport sockets and
the endpoint's metadata, and per inbound port the PeerAuthentication ``mode``. The resources
are the control plane's own translation."""

from __future__ import annotations

import random
import re

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from tests.engine.conftest import Clock, Upstreams, handle, ok, request, run
from tulle.api import validate_text
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.cluster_config import EndpointSpec, UpstreamTls
from tulle.engine.compile import compile_resources
from tulle.engine.inbound import inbound_policies
from tulle.engine.matching import ConfigError
from tulle.engine.message import Request, Response
from tulle.engine.outbound import Engine
from tulle.engine.tls_config import socket_choice
from tulle.xds import types

HOST = "web.default.svc.cluster.local"
CLUSTER = f"outbound|8080||{HOST}"
MESH = (("security.istio.io/tlsMode", "istio"),)
WEB = "spiffe://cluster.local/ns/default/sa/web"
CANARY = "spiffe://cluster.local/ns/default/sa/web-canary"
HTTP_ALPN = ("istio-peer-exchange", "istio", "http/1.1")


def resources(config: str = "", view: NodeView | None = None):
    result = validate_text(config, known_hosts=[HOST])
    assert result.model is not None, [f.format() for f in result.findings]
    registered = (
        Endpoint(HOST, "10.0.0.1", 9000, 8080, "HTTP", MESH, "web"),
        Endpoint(HOST, "10.0.0.2", 9000, 8080, "HTTP", MESH, "web-canary"),
        Endpoint(HOST, "10.0.0.3", 9000, 8080, "HTTP", (), "legacy"),
    )
    snapshot = build_snapshot(1, result.model, registered)
    return translate(snapshot, view or NodeView("sidecar", "default"))


def tls_by_address(config: str = "", view: NodeView | None = None) -> dict[str, object]:
    compiled = compile_resources("1", resources(config, view))
    return {e.address: e.tls for e in compiled.endpoints[CLUSTER]}


IDENTITIES = frozenset({WEB, CANARY, "spiffe://cluster.local/ns/default/sa/legacy"})
UPSTREAM = UpstreamTls(f"outbound_.8080_._.{HOST}", IDENTITIES, HTTP_ALPN)


def test_auto_mtls_for_endpoints_in_the_mesh_plain_text_for_the_others():
    assert tls_by_address() == {"10.0.0.1": UPSTREAM, "10.0.0.2": UPSTREAM, "10.0.0.3": None}


def destination_rule(mode: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web
  trafficPolicy: {{tls: {{mode: {mode}}}}}
"""


def test_destination_rule_modes():
    assert set(tls_by_address(destination_rule("ISTIO_MUTUAL")).values()) == {UPSTREAM}
    assert set(tls_by_address(destination_rule("DISABLE")).values()) == {None}


def test_the_proxyless_form_compiles_too():
    # A library on a proxyless node's resources (or a future data plane reading them): the
    # certificate provider form means the same, without SNI or ALPN.
    found = tls_by_address(destination_rule("ISTIO_MUTUAL"), NodeView("proxyless", "default"))
    assert set(found.values()) == {UpstreamTls("", IDENTITIES, ())}


def test_inbound_clusters_stay_plain_text():
    config = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  command: [web]
  ports: [{name: http, port: 8080}]
"""
    translated = resources(config, NodeView("sidecar", "default", (), "web"))
    compiled = compile_resources("1", translated)
    static = compiled.clusters["inbound|8080||"].static_endpoints
    assert static is not None
    assert [e.tls for e in static] == [None]


def test_the_engine_hands_each_endpoint_its_tls(engine_path):
    """Whichever path the engine takes, the endpoint the pool gets says how to connect."""
    seen: dict[str, UpstreamTls | None] = {}

    def record(endpoint: EndpointSpec, request: Request) -> Response:
        seen[endpoint.address] = endpoint.tls
        return ok(endpoint, request)

    upstreams = Upstreams({f"10.0.0.{i}:9000": record for i in (1, 2, 3)})
    engine = Engine(upstreams.send, Clock(), random.Random(7),
                    upstreams.start if engine_path == "callbacks" else None)  # fmt: skip
    engine.update(compile_resources("1", resources()))

    async def calls() -> None:
        for _ in range(200):  # until the balancer has picked each endpoint
            response = await handle(engine, "8080", request(authority=f"{HOST}:8080"))
            assert response.status == 200
            if len(seen) == 3:
                break

    run(calls())
    assert seen == {"10.0.0.1": UPSTREAM, "10.0.0.2": UPSTREAM, "10.0.0.3": None}


PORTS = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  command: [web]
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, protocol: GRPC},
          {name: db, port: 5432, protocol: TCP}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls: {9090: {mode: PERMISSIVE}, 5432: {mode: DISABLE}}
"""


def test_inbound_mode_per_port():
    listeners = resources(PORTS, NodeView("sidecar", "default", (), "web"))[types.LISTENER]
    policies = inbound_policies(listeners, now=0.0)
    assert {port: p.mode for port, p in policies.items()} == {
        8080: "STRICT",
        9090: "PERMISSIVE",
        5432: "DISABLE",
    }
    assert policies[8080].alpn == ("h2", "http/1.1")
    assert policies[5432].alpn == ()
    assert policies[5432].tcp
    assert policies[8080].service == HOST


def test_the_default_is_permissive():
    workload = PORTS.split("---", maxsplit=1)[0]
    listeners = resources(workload, NodeView("sidecar", "default", (), "web"))[types.LISTENER]
    assert {p.mode for p in inbound_policies(listeners, now=0.0).values()} == {"PERMISSIVE"}


# --- what the data plane refuses (the NACK reason) -------------------------------------------


def tls_cluster(context) -> cluster_pb2.Cluster:
    found = cluster_pb2.Cluster(name="c")
    found.transport_socket.name = "envoy.transport_sockets.tls"
    found.transport_socket.typed_config.Pack(context)
    return found


def test_san_matchers_other_than_exact_uris_are_refused():
    context = tls_pb2.UpstreamTlsContext()
    common = context.common_tls_context
    common.tls_certificate_sds_secret_configs.add(name="default")
    validation = common.combined_validation_context.default_validation_context
    validation.match_typed_subject_alt_names.add(
        san_type=common_pb2.SubjectAltNameMatcher.URI,
        matcher=string_pb2.StringMatcher(prefix="spiffe://cluster.local/"),
    )
    with pytest.raises(ConfigError, match="only exact URI subject alt name matchers"):
        socket_choice(tls_cluster(context))


def test_one_way_tls_is_refused():
    context = tls_pb2.UpstreamTlsContext(sni="example.com")
    context.common_tls_context.validation_context.SetInParent()
    with pytest.raises(ConfigError, match="no client certificate"):
        socket_choice(tls_cluster(context))


def test_a_compiled_config_with_a_bad_cluster_names_it():
    translated = dict(resources())
    clusters = dict(translated[types.CLUSTER])
    broken = cluster_pb2.Cluster()
    broken.CopyFrom(clusters[CLUSTER])
    broken.transport_socket_matches[
        0
    ].transport_socket.typed_config.type_url = (
        "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts"
    )
    clusters[CLUSTER] = broken
    translated[types.CLUSTER] = clusters
    with pytest.raises(
        ConfigError, match=rf"cluster '{re.escape(CLUSTER)}'.*Alts is not supported"
    ):
        compile_resources("1", translated)


def test_an_inbound_tls_chain_must_require_client_certificates():
    listeners = dict(resources(PORTS, NodeView("sidecar", "default", (), "web"))[types.LISTENER])
    inbound = listeners["virtualInbound"]
    context = tls_pb2.DownstreamTlsContext()
    inbound.filter_chains[0].transport_socket.typed_config.Unpack(context)
    context.require_client_certificate.value = False
    inbound.filter_chains[0].transport_socket.typed_config.Pack(context)
    with pytest.raises(ConfigError, match="must require a client certificate"):
        inbound_policies(listeners, now=0.0)
