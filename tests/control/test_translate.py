"""Translation is a pure function of a snapshot and a node: checked by comparing resources."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from tulle.api import validate_text
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import Translator, translate
from tulle.control.translate.context import NodeView
from tulle.engine.cluster_config import compile_cluster
from tulle.xds import types
from tulle.xds.node import parse_node_id

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [greeter.default.svc.cluster.local]
  ports: [{number: 50051, protocol: GRPC, name: grpc}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
    - {address: 127.0.0.1, ports: {grpc: 7001}, labels: {version: v1}, locality: eu/a}
    - {address: 127.0.0.2, ports: {grpc: 7002}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 5, maxRetries: 2}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 10s}
  subsets:
    - {name: v1, labels: {version: v1}}
    - name: v2
      labels: {version: v2}
      trafficPolicy:
        loadBalancer:
          consistentHash: {httpHeaderName: x-user}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
    - name: canary
      match:
        - headers: {x-canary: {exact: "1"}}
          uri: {prefix: /greeter.Greeter/}
      route:
        - destination: {host: greeter, subset: v2}
      fault:
        abort: {grpcStatus: UNAVAILABLE, percentage: {value: 12.5}}
    - route:
        - destination: {host: greeter, subset: v1}
          weight: 90
        - destination: {host: greeter, subset: v2}
          weight: 10
      timeout: 2s
      retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "unavailable,503"}
"""

HOST = "greeter.default.svc.cluster.local"
PROXYLESS = NodeView("proxyless", "default")


def snapshot(endpoints=()):
    result = validate_text(CONFIG)
    assert result.model is not None, [f.format() for f in result.findings]
    return build_snapshot(1, result.model, tuple(endpoints))


def as_dict(message):
    return MessageToDict(message)


def test_proxyless_listeners_for_every_name_a_client_may_dial():
    listeners = translate(snapshot(), PROXYLESS)[types.LISTENER]
    assert sorted(listeners) == sorted(
        [
            "greeter", "greeter:50051",
            "greeter.default", "greeter.default:50051",
            "greeter.default.svc", "greeter.default.svc:50051",
            HOST, f"{HOST}:50051",
        ]
    )  # fmt: skip
    hcm = as_dict(listeners["greeter"])["apiListener"]["apiListener"]
    assert hcm["rds"]["routeConfigName"] == f"{HOST}:50051"
    assert [f["name"] for f in hcm["httpFilters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_a_node_in_another_namespace_has_no_bare_short_name():
    listeners = translate(snapshot(), NodeView("proxyless", "other"))[types.LISTENER]
    assert "greeter" not in listeners
    assert "greeter.default:50051" in listeners


def test_routes_carry_matches_weights_faults_retries_and_timeouts():
    routes = translate(snapshot(), PROXYLESS)[types.ROUTE]
    (vhost,) = as_dict(routes[f"{HOST}:50051"])["virtualHosts"]
    assert set(vhost["domains"]) >= {"greeter", "greeter:50051", HOST, f"{HOST}:50051"}
    canary, split = vhost["routes"]
    assert canary["match"] == {
        "prefix": "/greeter.Greeter/",
        "headers": [{"name": "x-canary", "stringMatch": {"exact": "1"}}],
    }
    assert canary["route"]["cluster"] == f"outbound|50051|v2|{HOST}"
    assert canary["route"]["hashPolicy"] == [{"header": {"headerName": "x-user"}}]
    fault = canary["typedPerFilterConfig"]["envoy.filters.http.fault"]
    assert fault["abort"] == {
        "grpcStatus": 14,
        "percentage": {"numerator": 125000, "denominator": "MILLION"},
    }
    assert split["route"]["weightedClusters"]["clusters"] == [
        {"name": f"outbound|50051|v1|{HOST}", "weight": 90},
        {"name": f"outbound|50051|v2|{HOST}", "weight": 10},
    ]
    assert split["route"]["timeout"] == "2s"
    assert split["route"]["maxStreamDuration"]["maxStreamDuration"] == "2s"
    assert split["route"]["retryPolicy"] == {
        "retryOn": "unavailable,retriable-status-codes",
        "numRetries": 3,
        "perTryTimeout": "0.500s",
        "retriableStatusCodes": [503],
    }


def test_clusters_carry_the_destination_rule():
    clusters = translate(snapshot(), NodeView("sidecar", "default"))[types.CLUSTER]
    assert set(clusters) == {f"outbound|50051|{s}|{HOST}" for s in ("", "v1", "v2")}
    base = as_dict(clusters[f"outbound|50051||{HOST}"])
    assert base["lbPolicy"] == "LEAST_REQUEST"
    assert base["connectTimeout"] == "2s"
    assert base["circuitBreakers"]["thresholds"] == [
        {"maxConnections": 10, "maxPendingRequests": 5, "maxRetries": 2}
    ]
    assert base["outlierDetection"]["consecutive5xx"] == 3
    assert base["outlierDetection"]["baseEjectionTime"] == "10s"
    assert base["edsClusterConfig"]["serviceName"] == f"outbound|50051||{HOST}"
    assert as_dict(clusters[f"outbound|50051|v2|{HOST}"])["lbPolicy"] == "RING_HASH"


def test_clusters_name_the_upstream_protocol_of_their_port():
    endpoints = [
        Endpoint("web.default.svc.cluster.local", "127.0.0.1", 9000, 8080, "HTTP"),
        Endpoint("db.default.svc.cluster.local", "127.0.0.1", 9001, 5432, "TCP"),
    ]
    clusters = translate(snapshot(endpoints), NodeView("sidecar", "default"))[types.CLUSTER]
    engine = {name: compile_cluster(c).http2 for name, c in clusters.items()}
    assert engine[f"outbound|50051||{HOST}"] is True  # GRPC: HTTP/2 whatever the client spoke
    assert engine["outbound|8080||web.default.svc.cluster.local"] is False  # HTTP/1.1
    assert engine["outbound|5432||db.default.svc.cluster.local"] is None  # the client's
    options = as_dict(clusters[f"outbound|50051||{HOST}"])["typedExtensionProtocolOptions"]
    assert options == {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicitHttpConfig": {"http2ProtocolOptions": {}},
        }
    }


def test_proxyless_clusters_use_only_policies_grpcio_accepts():
    clusters = translate(snapshot(), PROXYLESS)[types.CLUSTER]
    policies = {name: as_dict(c).get("lbPolicy", "ROUND_ROBIN") for name, c in clusters.items()}
    assert policies[f"outbound|50051||{HOST}"] == "ROUND_ROBIN"
    assert policies[f"outbound|50051|v2|{HOST}"] == "RING_HASH"


def test_endpoints_by_subset_and_locality_with_registered_ones():
    extra = Endpoint(HOST, "127.0.0.3", 7003, 50051, "GRPC", (("version", "v1"),))
    assignments = translate(snapshot([extra]), PROXYLESS)[types.ENDPOINT]
    v1 = as_dict(assignments[f"outbound|50051|v1|{HOST}"])
    ports = sorted(
        e["endpoint"]["address"]["socketAddress"]["portValue"]
        for group in v1["endpoints"]
        for e in group["lbEndpoints"]
    )
    assert ports == [7001, 7003]
    assert all(group["loadBalancingWeight"] >= 1 for group in v1["endpoints"])
    localities = [group["locality"] for group in v1["endpoints"]]
    assert {"region": "eu", "zone": "a"} in localities
    v2 = as_dict(assignments[f"outbound|50051|v2|{HOST}"])
    assert [
        e["endpoint"]["address"]["socketAddress"]["address"]
        for e in v2["endpoints"][0]["lbEndpoints"]
    ] == ["127.0.0.2"]


def test_registered_endpoints_alone_make_a_service():
    endpoint = Endpoint("hello.default.svc.cluster.local", "127.0.0.1", 9000, 50052, "GRPC")
    result = translate(snapshot([endpoint]), PROXYLESS)
    assert "hello:50052" in result[types.LISTENER]
    assert "outbound|50052||hello.default.svc.cluster.local" in result[types.CLUSTER]


def test_sidecar_gets_outbound_http_proxy_and_per_port_resources():
    result = translate(snapshot(), NodeView("sidecar", "default"))
    assert {"virtualOutbound", "http_proxy", "0.0.0.0_50051"} <= set(result[types.LISTENER])
    assert {"http_proxy", "50051"} <= set(result[types.ROUTE])


def test_translator_caches_per_snapshot_and_view():
    translator = Translator()
    snap = snapshot()
    node = parse_node_id("proxyless~127.0.0.1~a.default~default.svc.cluster.local")
    other = parse_node_id("proxyless~127.0.0.2~b.default~default.svc.cluster.local")
    assert translator.resources(snap, node) is translator.resources(snap, other)


POLICY = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: cart}
spec:
  command: [cart]
  ports: [{name: http, port: 8080}, {name: db, port: 5432, protocol: TCP}]
  labels: {version: v1}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
    - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-frontend}
spec:
  selector: {matchLabels: {app: cart}}
  rules:
    - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]
      to: [{operation: {methods: [GET, POST]}}]
      when:
        - {key: "request.headers[x-tenant]", values: [acme]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere}
spec:
  selector: {matchLabels: {app: payment}}
  action: DENY
  rules: [{}]
---
apiVersion: tulle.dev/v1alpha1
kind: RateLimit
metadata: {name: cart-in}
spec:
  selector: {matchLabels: {app: cart}}
  limit: {requests: 30, unit: minute, burst: 5}
---
apiVersion: tulle.dev/v1alpha1
kind: RateLimit
metadata: {name: to-cart}
spec:
  target: {host: cart, route: checkout}
  limit: {requests: 10}
  statusCode: 503
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart}
spec:
  hosts: [cart]
  http:
    - name: checkout
      match: [{uri: {prefix: /checkout}}]
      route: [{destination: {host: cart}}]
    - route: [{destination: {host: cart}}]
"""


def policy_resources(mode="sidecar", text=POLICY):
    result = validate_text(text)
    assert result.model is not None, [f.format() for f in result.findings]
    return translate(build_snapshot(1, result.model, ()), NodeView(mode, "default", (), "cart"))


def test_inbound_listener_applies_rbac_and_the_rate_limit():
    resources = policy_resources()
    inbound = as_dict(resources[types.LISTENER]["virtualInbound"])
    # PERMISSIVE (the default): an mTLS chain and a plain-text one per port, the same filters.
    secure_http, http_chain, secure_tcp, tcp_chain = inbound["filterChains"]
    assert secure_http["filters"] == http_chain["filters"]
    assert secure_tcp["filters"] == tcp_chain["filters"]
    assert http_chain["filterChainMatch"]["destinationPort"] == 8080
    # The TCP port: network RBAC from the same policies (Istio's TCP rules: the DENY rule's
    # paths are left out, so it denies every connection; the ALLOW rule with methods and a
    # header condition is dropped, leaving an ALLOW that admits none), then the tcp_proxy.
    assert [f["name"] for f in tcp_chain["filters"]] == [
        "envoy.filters.network.rbac.deny",
        "envoy.filters.network.rbac.allow",
        "envoy.filters.network.tcp_proxy",
    ]
    tcp_deny, tcp_allow = (f["typedConfig"] for f in tcp_chain["filters"][:2])
    assert tcp_deny["statPrefix"] == "tcp."
    assert tcp_deny["rules"]["policies"]["default/deny-admin[0]"]["permissions"] == [{"any": True}]
    assert tcp_allow["rules"] == {}  # action ALLOW (the default) and no policy: admits nothing
    manager = http_chain["filters"][0]["typedConfig"]
    names = [f["name"] for f in manager["httpFilters"]]
    assert names == [
        "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.allow",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router",
    ]
    deny, allow, limit = (f["typedConfig"] for f in manager["httpFilters"][:3])
    assert deny["rules"]["action"] == "DENY"
    assert list(deny["rules"]["policies"]) == ["default/deny-admin[0]"]  # not default/elsewhere
    assert deny["rules"]["policies"]["default/deny-admin[0]"]["permissions"] == [
        {"andRules": {"rules": [{"urlPath": {"path": {"prefix": "/admin"}}}]}}
    ]
    allowed = allow["rules"]["policies"]["default/from-frontend[0]"]
    assert allowed["principals"] == [
        {
            "andIds": {
                "ids": [
                    {
                        "authenticated": {
                            "principalName": {
                                "exact": "spiffe://cluster.local/ns/default/sa/frontend"
                            }
                        }
                    }
                ]
            }
        }
    ]
    methods = allowed["permissions"][0]["andRules"]["rules"]
    assert methods[0]["andRules"]["rules"][0]["orRules"]["rules"][0] == {
        "header": {"name": ":method", "stringMatch": {"exact": "GET"}}
    }
    assert methods[1] == {"header": {"name": "x-tenant", "stringMatch": {"exact": "acme"}}}
    assert limit["tokenBucket"] == {"maxTokens": 5, "tokensPerFill": 1, "fillInterval": "2s"}
    assert limit["status"] == {"code": "TooManyRequests"}
    assert "inbound|8080||" in resources[types.CLUSTER]


def test_outbound_rate_limit_on_the_targeted_route_only():
    routes = as_dict(policy_resources()[types.ROUTE]["cart.default.svc.cluster.local:8080"])
    checkout, rest = routes["virtualHosts"][0]["routes"]
    limit = checkout["typedPerFilterConfig"]["envoy.filters.http.local_ratelimit"]
    assert limit["tokenBucket"] == {"maxTokens": 10, "tokensPerFill": 10, "fillInterval": "1s"}
    assert limit["status"] == {"code": "ServiceUnavailable"}
    assert "typedPerFilterConfig" not in rest


def test_proxyless_nodes_get_no_filter_grpcio_lacks():
    resources = policy_resources("proxyless")
    routes = as_dict(resources[types.ROUTE]["cart.default.svc.cluster.local:8080"])
    assert all("typedPerFilterConfig" not in r for r in routes["virtualHosts"][0]["routes"])
    manager = as_dict(resources[types.LISTENER]["cart"])["apiListener"]["apiListener"]
    assert [f["name"] for f in manager["httpFilters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
