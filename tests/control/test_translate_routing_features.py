"""Routing features through translation into the routes sidecars, the library and grpcio read:
GRPCRoute with a Service parent (method, service and header matches in GRPCRoute precedence,
weighted backends, header filters), an HTTPRoute parentRef's ``sectionName`` and ``port``
(the route applies on that Service port only; the other ports keep the default route),
VirtualService delegation (Istio's merge), and CORS (Envoy's per-route CorsPolicy for sidecars
and the library; none for proxyless gRPC)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.extensions.filters.http.cors.v3 import cors_pb2

from tests.manifests import virtual_service
from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.xds import types
from tulle.xds.node import Mode

HOST = "web.default.svc.cluster.local"
SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: canary}
spec:
  ports: [{name: grpc, port: 9090, appProtocol: grpc}]
---
"""

GRPC_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, sectionName: grpc}]
  rules:
  - backendRefs: [{name: web, port: 9090}]
  - matches: [{method: {service: shop.Cart}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-route, value: cart}]}
    backendRefs: [{name: web, port: 9090, weight: 3}, {name: canary, port: 9090, weight: 1}]
  - matches:
    - method: {service: shop.Cart, method: Get}
      headers: [{name: x-user, value: jason}]
    backendRefs: [{name: canary, port: 9090}]
  - matches: [{method: {method: Ping}}, {method: {type: RegularExpression, service: "shop[.].*"}}]
    backendRefs: [{name: canary, port: 9090}]
"""


def _route_configs(text: str, mode: Mode = "sidecar") -> Mapping[str, Any]:
    result = validate_text(text)
    assert result.model is not None, [f.format() for f in result.findings]
    assert not result.findings, [f.format() for f in result.findings]
    resources = translate(build_snapshot(1, result.model, ()), NodeView(mode, "default"))
    return resources[types.ROUTE]


def _routes(text: str, port: int, mode: Mode = "sidecar") -> list[Any]:
    (vhost,) = _route_configs(text, mode)[f"{HOST}:{port}"].virtual_hosts
    return list(vhost.routes)


def _path(route: Any) -> tuple[str, str]:
    kind = route.match.WhichOneof("path_specifier")
    value = getattr(route.match, kind)
    return kind, value if isinstance(value, str) else value.regex


def test_grpc_route_becomes_method_routes_in_grpc_route_precedence():
    routes = _routes(SERVICES + GRPC_ROUTE, 9090, mode="proxyless")
    assert [_path(r) for r in routes] == [
        ("path", "/shop.Cart/Get"),  # the longest service, then the longest method
        ("prefix", "/shop.Cart/"),
        ("safe_regex", "/(?:shop[.].*)/[^/]+"),
        ("safe_regex", "/[^/]+/Ping"),
        ("prefix", "/"),  # no match: every call, last
    ]
    (header,) = routes[0].match.headers
    assert (header.name, header.string_match.exact) == ("x-user", "jason")
    weights = {c.name: c.weight.value for c in routes[1].route.weighted_clusters.clusters}
    assert weights == {
        f"outbound|9090||{HOST}": 3,
        "outbound|9090||canary.default.svc.cluster.local": 1,
    }
    assert [(h.header.key, h.header.value) for h in routes[1].request_headers_to_add] == [
        ("x-route", "cart")
    ]


def test_a_section_name_binds_the_route_to_that_port_only():
    assert len(_routes(SERVICES + GRPC_ROUTE, 9090)) == 5
    (default,) = _routes(SERVICES + GRPC_ROUTE, 8080)  # the http port: the Service's own route
    assert default.name == "default"
    assert default.route.cluster == f"outbound|8080||{HOST}"


def test_an_http_route_port_binds_it_to_that_port_only():
    route = (
        SERVICES
        + """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules: [{backendRefs: [{name: canary, port: 9090}]}]
"""
    )
    (on_http,) = _routes(route, 8080)
    assert on_http.route.cluster == "outbound|9090||canary.default.svc.cluster.local"
    (on_grpc,) = _routes(route, 9090)
    assert on_grpc.route.cluster == f"outbound|9090||{HOST}"


DELEGATION = (
    SERVICES
    + virtual_service("""\
    - name: api
      match: [{uri: {prefix: /api}, headers: {x-team: {exact: a}}}]
      delegate: {name: web-api, namespace: default}
      timeout: 3s
    - route: [{destination: {host: web, port: {number: 8080}}}]""")
    + """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-api}
spec:
  http:
  - name: v2
    match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: canary, port: {number: 9090}}}]
    timeout: 1s
  - route: [{destination: {host: web, port: {number: 8080}}}]
"""
)


def test_delegation_merges_the_delegate_routes_into_the_root():
    routes = _routes(DELEGATION, 8080)
    assert [(r.name, _path(r)) for r in routes] == [
        ("default/web/api-v2", ("prefix", "/api/v2")),
        ("default/web/api", ("prefix", "/api")),
        ("default/web/2", ("prefix", "/")),  # unnamed: its place among the merged routes
    ]
    # The root's header match holds in both; its timeout where the delegate sets none.
    assert all(r.match.headers[0].name == "x-team" for r in routes[:2])
    assert [r.route.timeout.seconds for r in routes] == [1, 3, 0]
    assert routes[0].route.cluster == "outbound|9090||canary.default.svc.cluster.local"


def test_cors_is_envoy_per_route_cors_policy_for_sidecars_not_for_grpcio():
    text = SERVICES + virtual_service("""\
    - route: [{destination: {host: web, port: {number: 8080}}}]
      corsPolicy:
        allowOrigins: [{prefix: "https://"}]
        allowMethods: [GET, POST]
        maxAge: 1m
        unmatchedPreflights: IGNORE""")
    (route,) = _routes(text, 8080)
    policy = cors_pb2.CorsPolicy()
    assert route.typed_per_filter_config[types.CORS_FILTER].Unpack(policy)
    assert [m.prefix for m in policy.allow_origin_string_match] == ["https://"]
    assert (policy.allow_methods, policy.max_age) == ("GET,POST", "60")
    assert policy.forward_not_matching_preflights.value is False
    assert not policy.HasField("allow_credentials")
    (proxyless,) = _routes(text, 8080, mode="proxyless")
    assert types.CORS_FILTER not in proxyless.typed_per_filter_config
