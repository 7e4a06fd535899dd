"""DestinationRule connection settings through translation and back into the engine's spec
(what a sidecar or the library compiles from the Cluster it is sent): slow start, TCP
keepalive, HTTP/2 PINGs, the h2 upgrade (the rule's, else the Mesh's), HTTP/1.1 to an HTTP
app behind a sidecar whatever the caller spoke, and the rule a workload selector gives each
client."""

from __future__ import annotations

import pytest

from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.cluster_config import ClusterSpec, compile_cluster
from tulle.engine.connection_options import PingSpec, SlowStartSpec, TcpKeepaliveSpec
from tulle.xds import types

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090}, {name: tcp-db, port: 5432}]
---
"""
WEB = "outbound|8080||web.prod.svc.cluster.local"
GRPC = "outbound|9090||web.prod.svc.cluster.local"
DB = "outbound|5432||web.prod.svc.cluster.local"


def rule(policy: str, extra: str = "", name: str = "web") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: prod}}
spec:
  host: web
  trafficPolicy: {policy}
{extra}---
"""


MESH_UPGRADE = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec: {h2UpgradePolicy: UPGRADE}
---
"""


def specs(config: str, view: NodeView | None = None) -> dict[str, ClusterSpec]:
    result = validate_text(SERVICES + config)
    assert result.model is not None, [f.format() for f in result.findings]
    snapshot = build_snapshot(1, result.model, ())
    clusters = translate(snapshot, view or NodeView("sidecar", "prod"))[types.CLUSTER]
    return {name: compile_cluster(cluster) for name, cluster in clusters.items()}


@pytest.mark.parametrize(
    ("load_balancer", "expected"),
    [
        ("{simple: ROUND_ROBIN, warmupDurationSecs: 60s}", SlowStartSpec(60.0, 1.0, 10.0)),
        ("{warmup: {duration: 2m, minimumPercent: 5, aggression: 2}}", SlowStartSpec(120, 2, 5)),
        ("{simple: RANDOM, warmupDurationSecs: 60s}", None),
    ],
)
def test_slow_start(load_balancer, expected):
    assert specs(rule(f"{{loadBalancer: {load_balancer}}}"))[WEB].slow_start == expected


def test_tcp_keepalive_and_http2_pings():
    found = specs(
        rule(
            "{connectionPool: {tcp: {tcpKeepalive: {time: 30s, probes: 4}},"
            " http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}}"
        )
    )
    assert {found[name].tcp_keepalive for name in (WEB, GRPC, DB)} == {
        TcpKeepaliveSpec(time=30, interval=None, probes=4)
    }
    # PINGs wherever HTTP/2 may go upstream: gRPC ports, and ports passing the client's on.
    assert (found[WEB].pings, found[GRPC].pings) == (None, PingSpec(15.0, 5.0))
    assert found[DB].pings == PingSpec(15.0, 5.0)
    assert specs("")[GRPC].pings is None


@pytest.mark.parametrize(
    ("config", "web", "db"),
    [
        ("", False, None),  # Istio's default: HTTP/1.1 to HTTP ports
        (rule("{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}"), True, True),
        (MESH_UPGRADE, True, None),  # the Mesh upgrades HTTP ports only
        (MESH_UPGRADE + rule("{connectionPool: {http: {h2UpgradePolicy: DEFAULT}}}"), True, None),
        (MESH_UPGRADE + rule("{connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}}"),
         False, None),
    ],
)  # fmt: skip
def test_h2_upgrade(config, web, db):
    found = specs(config)
    assert (found[WEB].http2, found[GRPC].http2, found[DB].http2) == (web, True, db)


def test_inbound_clusters_speak_the_apps_protocol():
    workload = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: api, namespace: prod}
spec:
  command: [api]
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, protocol: GRPC}]
---
"""
    found = specs(MESH_UPGRADE + workload, NodeView("sidecar", "prod", (("app", "api"),), "api"))
    # A request a caller upgraded to HTTP/2 reaches the HTTP/1.1 app in HTTP/1.1.
    assert (found["inbound|8080||"].http2, found["inbound|9090||"].http2) == (False, True)


def test_each_client_gets_the_rule_its_labels_select():
    config = rule(
        "{loadBalancer: {simple: RANDOM}}",
        "  workloadSelector: {matchLabels: {app: ratings}}\n",
        name="for-ratings",
    ) + rule("{loadBalancer: {simple: ROUND_ROBIN}}")
    by_client = {
        labels: specs(config, NodeView("sidecar", namespace, labels))[WEB].lb
        for namespace, labels in [("prod", (("app", "ratings"),)), ("prod", (("app", "x"),))]
    }
    assert by_client == {(("app", "ratings"),): "RANDOM", (("app", "x"),): "ROUND_ROBIN"}
    # Another namespace's client with the same labels: the rule without a selector.
    other = specs(config, NodeView("sidecar", "test", (("app", "ratings"),)))
    assert other[WEB].lb == "ROUND_ROBIN"
