"""A Kubernetes Service read from a config file is a host for translation, as a cluster's
Service is: a cluster per port with the port's protocol, routes from its VirtualService, and,
when nothing registered endpoints for it (no Workload serves it under ``tulle up``), an empty
assignment, so that calls get 503 ``no healthy endpoint`` rather than an unknown host."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from tulle.api import validate_text
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.cluster_config import compile_cluster
from tulle.xds import types

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}, {name: grpc-admin, port: 9090}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1}
spec: {selector: {matchLabels: {app: ratings}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
    - route: [{destination: {host: ratings, port: {number: 9080}}}]
      timeout: 2s
"""

HOST = "ratings.default.svc.cluster.local"
SIDECAR = NodeView("sidecar", "default")


def resources(endpoints: tuple[Endpoint, ...] = ()):
    result = validate_text(CONFIG)
    assert result.model is not None, [f.format() for f in result.findings]
    return translate(build_snapshot(1, result.model, endpoints), SIDECAR)


def test_a_service_of_a_file_is_a_host_with_clusters_and_routes():
    found = resources()
    clusters = {
        name: MessageToDict(cluster)
        for name, cluster in found[types.CLUSTER].items()
        if name.endswith(HOST)
    }
    assert sorted(clusters) == [f"outbound|9080||{HOST}", f"outbound|9090||{HOST}"]
    # Each port's protocol, from its name's prefix: gRPC goes upstream as HTTP/2, HTTP as 1.1.
    engine = {
        name: compile_cluster(cluster).http2
        for name, cluster in found[types.CLUSTER].items()
        if name.endswith(HOST)
    }
    assert engine == {f"outbound|9080||{HOST}": False, f"outbound|9090||{HOST}": True}
    route = MessageToDict(found[types.ROUTE]["9080"])
    (host,) = [v for v in route["virtualHosts"] if f"{HOST}:9080" in v["domains"]]
    assert [(r["route"]["cluster"], r["route"]["timeout"]) for r in host["routes"]] == [
        (f"outbound|9080||{HOST}", "2s")
    ]


def test_with_no_endpoint_its_assignment_is_empty_and_registered_ones_fill_it():
    name = f"outbound|9080||{HOST}"
    empty = MessageToDict(resources()[types.ENDPOINT][name])
    assert empty.get("endpoints", []) == []
    registered = Endpoint(HOST, "127.0.0.1", 7001, 9080, "HTTP")
    filled = MessageToDict(resources((registered,))[types.ENDPOINT][name])
    assert [
        e["endpoint"]["address"]["socketAddress"]["portValue"]
        for group in filled["endpoints"]
        for e in group["lbEndpoints"]
    ] == [7001]
