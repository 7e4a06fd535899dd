"""Config seen per namespace, in translation: GAMMA consumer routes (an HTTPRoute in a namespace
other than its Service's applies to callers in the route's namespace only, before the producer
route) and ``exportTo`` on VirtualService, DestinationRule and ServiceEntry. Each node gets the
resources of its namespace; the translation cache stays one entry per namespace."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from tulle.api import validate_text
from tulle.control.snapshot import Snapshot, build_snapshot
from tulle.control.translate import Translator, translate
from tulle.control.translate.context import NodeView
from tulle.xds import types
from tulle.xds.node import parse_node_id

SERVICES = "".join(
    f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: prod}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080}}]
---
"""
    for name in ("reviews", "reviews-v2", "ratings", "ratings-canary")
)

CONFIG = (
    SERVICES
    + """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-producer, namespace: prod}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-consumer, namespace: frontend}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, namespace: prod, port: 9080}]
  rules: [{backendRefs: [{name: reviews-v2, namespace: prod, port: 9080}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-canary, namespace: team-a}
spec:
  hosts: [ratings.prod.svc.cluster.local]
  exportTo: ["."]
  http: [{route: [{destination: {host: ratings-canary.prod.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-hidden, namespace: team-b}
spec:
  hosts: [ratings.prod.svc.cluster.local]
  exportTo: ["~"]
  http: [{route: [{destination: {host: ratings-canary.prod.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: prod}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-for-team-a, namespace: team-a}
spec:
  host: ratings.prod.svc.cluster.local
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: team-a}
spec:
  hosts: [api.partner.example]
  exportTo: [".", team-c]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"""
)

REVIEWS = "reviews.prod.svc.cluster.local"
RATINGS = "ratings.prod.svc.cluster.local"


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    result = validate_text(CONFIG)
    assert result.model is not None, [f.format() for f in result.findings]
    assert result.ok
    return build_snapshot(1, result.model, ())


def _clusters_of_route(snapshot: Snapshot, namespace: str, host: str) -> list[str]:
    routes = translate(snapshot, NodeView("sidecar", namespace))[types.ROUTE]
    (vhost,) = MessageToDict(routes[f"{host}:9080"])["virtualHosts"]
    return [route["route"]["cluster"] for route in vhost["routes"]]


@pytest.mark.parametrize(
    ("namespace", "backend"),
    [("frontend", "reviews-v2"), ("prod", "reviews"), ("default", "reviews")],
)
def test_a_consumer_route_applies_to_its_own_namespace_only(
    snapshot: Snapshot, namespace: str, backend: str
):
    assert _clusters_of_route(snapshot, namespace, REVIEWS) == [
        f"outbound|9080||{backend}.prod.svc.cluster.local"
    ]


@pytest.mark.parametrize(
    ("namespace", "backend"),
    [("team-a", "ratings-canary"), ("team-b", "ratings"), ("prod", "ratings")],
)
def test_a_virtual_service_exported_to_its_namespace_routes_there_only(
    snapshot: Snapshot, namespace: str, backend: str
):
    # team-a's exportTo ".": its callers only; team-b's "~": nobody (the default route).
    assert _clusters_of_route(snapshot, namespace, RATINGS) == [
        f"outbound|9080||{backend}.prod.svc.cluster.local"
    ]


def _cluster(snapshot: Snapshot, namespace: str, name: str) -> dict[str, Any]:
    clusters = translate(snapshot, NodeView("sidecar", namespace))[types.CLUSTER]
    return MessageToDict(clusters[name])


@pytest.mark.parametrize(
    ("namespace", "policy"),
    [("team-a", "RANDOM"), ("prod", "ROUND_ROBIN"), ("frontend", "ROUND_ROBIN")],
)
def test_a_destination_rule_exported_to_its_namespace_wins_there(
    snapshot: Snapshot, namespace: str, policy: str
):
    cluster = _cluster(snapshot, namespace, f"outbound|9080||{RATINGS}")
    assert cluster.get("lbPolicy", "ROUND_ROBIN") == policy


@pytest.mark.parametrize(
    ("namespace", "seen"), [("team-a", True), ("team-c", True), ("prod", False)]
)
def test_a_service_entry_is_seen_where_it_is_exported(
    snapshot: Snapshot, namespace: str, seen: bool
):
    resources = translate(snapshot, NodeView("sidecar", namespace))
    name = "outbound|80||api.partner.example"
    assert (name in resources[types.CLUSTER]) is seen
    assert (name in resources[types.ENDPOINT]) is seen
    assert ("api.partner.example:80" in resources[types.ROUTE]) is seen


def test_the_cache_holds_one_translation_per_namespace(snapshot: Snapshot):
    translator = Translator()

    def node(pod: str, namespace: str) -> Any:
        node_id = f"proxyless~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"
        return translator.resources(snapshot, parse_node_id(node_id))

    first, second = node("a", "frontend"), node("b", "frontend")
    assert first is second
    other = node("c", "prod")
    assert other is not first
    assert other[types.ROUTE] != first[types.ROUTE]
