"""The valid corpus covers every field the config API reads: it loads with no finding, and
normalizes to the values (and Istio defaults) later parts rely on."""

from __future__ import annotations

import pytest

from tulle.api import validate_paths
from tulle.api.model import (
    ConnectionPool,
    CorsPolicy,
    HeaderEdits,
    LoadBalancer,
    MeshModel,
    OutlierPolicy,
    RouteMatch,
    StringMatcher,
)
from tulle.api.source import read_paths

REVIEWS = "reviews.shop.svc.cluster.local"
RATINGS = "ratings.shop.svc.cluster.local"
DETAILS = "details.shop.svc.cluster.local"


@pytest.fixture(scope="module")
def model() -> MeshModel:
    from tests.conftest import CORPUS

    result = validate_paths([CORPUS / "valid"])
    assert [f.format() for f in result.findings] == []
    assert result.model is not None
    return result.model


def test_every_kind_is_in_the_corpus():
    from tests.conftest import CORPUS
    from tulle.api.kinds import KINDS

    documents, _ = read_paths([CORPUS / "valid"])
    kinds = {(d.data["apiVersion"], d.data["kind"]) for d in documents}
    for kind in KINDS:
        versions = {v for v, k in kinds if k == kind.KIND}
        assert versions, f"no {kind.KIND} in the valid corpus"
    assert {v for v, k in kinds if k == "VirtualService"} >= {
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
    }
    assert "networking.istio.io/v1alpha3" in {v for v, _ in kinds}


def test_mesh_settings(model):
    s = model.settings
    assert (s.trust_domain, s.mtls_mode, s.outbound_policy) == (
        "example.org",
        "STRICT",
        "REGISTRY_ONLY",
    )
    assert (s.access_log, s.access_log_format, s.tracing_sampling) == (False, "TEXT", 12.5)


def test_workloads_and_their_service(model):
    by_name = {w.name: w for w in model.workloads}
    v1 = by_name["reviews-v1"]
    assert v1.service_host == REVIEWS
    assert v1.command == ("python3", "-m", "reviews")
    assert v1.args == ("--verbose",)
    assert dict(v1.env) == {"LOG_LEVEL": "debug", "COLOR": "0"}
    assert v1.replicas == 2
    assert [(p.name, p.port, p.protocol) for p in v1.ports] == [
        ("http", 9080, "HTTP"),
        ("grpc", 9090, "GRPC"),
    ]
    assert v1.service_account == "bookinfo-reviews"
    assert v1.label_map == {"app": "reviews", "version": "v1"}
    assert v1.mesh == "sidecar"
    assert v1.readiness is not None
    assert (v1.readiness.kind, v1.readiness.path, v1.readiness.port) == ("http", "/healthz", "http")
    assert (v1.readiness.period, v1.readiness.timeout) == (0.5, 2.0)
    v2 = by_name["reviews-v2"]
    assert v2.mesh == "library"
    assert v2.service_account == "reviews-v2"  # none given: its name, its identity in local mode
    assert v2.readiness is not None
    assert v2.readiness.kind == "tcp"
    ratings = by_name["ratings"]
    assert (ratings.replicas, ratings.mesh, ratings.label_map) == (0, "none", {"app": "ratings"})
    service = model.services[REVIEWS]
    assert service.location == "MESH_INTERNAL"
    assert {p.number for p in service.ports} == {9080, 9090}
    assert [str(o) for o in service.origins] == [
        "Workload shop/reviews-v1",
        "Workload shop/reviews-v2",
    ]


def test_service_entries(model):
    greeter = model.services["greeter.shop.svc.cluster.local"]
    assert (greeter.location, greeter.resolution) == ("MESH_INTERNAL", "STATIC")
    assert greeter.addresses == ("240.240.0.1",)
    port = greeter.ports[0]
    assert (port.number, port.protocol, port.name, port.target_port) == (
        50051,
        "GRPC",
        "grpc",
        50061,
    )
    first, second = greeter.endpoints
    assert (first.address, dict(first.ports), dict(first.labels)) == (
        "127.0.0.1",
        {"grpc": "50071"},
        {"version": "v1"},
    )
    assert (first.weight, first.locality, first.service_account) == (3, "local/zone-a", "greeter")
    assert (second.address, second.weight) == ("127.0.0.2", 1)
    external = model.services["api.payments.example.com"]
    assert (external.location, external.resolution) == ("MESH_EXTERNAL", "DNS")
    # HTTPS passes through as opaque TCP (the mesh protocol; Istio carries it so to an external host)
    assert [p.protocol for p in external.ports] == ["TCP", "HTTP"]
    assert "*.cdn.example.com" in model.services
    vm = model.services["vm-details.shop.svc.cluster.local"]
    assert vm.workload_selector == (("app", "details"),)
    assert vm.resolution == "NONE"


def test_virtual_service_routes(model):
    # exportTo: ["."]: the shop namespace's callers see the routes, no other namespace does.
    assert REVIEWS not in model.http_routes
    assert model.http_routes_for(REVIEWS, "default") == ()
    routes = model.http_routes_for(REVIEWS, "shop")
    # The delegate's two routes stand in for the root route "api" (Istio's names: root-leaf).
    names = ["jason", "grpc-fault", "old", "v1", "api-v2", "api", "canary"]
    assert [r.name for r in routes] == names
    jason = routes[0]
    first, second = jason.matches
    assert first.path == StringMatcher("prefix", "/reviews", ignore_case=True)
    assert first.method == StringMatcher("exact", "GET")
    assert first.authority == StringMatcher("regex", r"reviews(\.shop)?(:9080)?")
    assert dict(first.headers) == {
        "end-user": StringMatcher("exact", "jason"),
        "x-id": StringMatcher("regex", "[0-9]+"),
        "x-trace": StringMatcher("prefix", "abc"),
    }
    assert dict(first.without_headers) == {"x-skip": StringMatcher("present")}
    assert dict(first.query_params) == {"debug": StringMatcher("exact", "1")}
    assert (first.port, dict(first.source_labels)) == (9080, {"app": "productpage"})
    assert second.path == StringMatcher("exact", "/reviews/top")
    (dest,) = jason.destinations
    assert (dest.host, dest.subset, dest.port, dest.weight) == (REVIEWS, "v2", 9080, 100)
    assert dest.request_headers == HeaderEdits(set=(("x-route", "jason"),))
    assert dest.response_headers == HeaderEdits(remove=("x-internal",))
    assert jason.request_headers == HeaderEdits(add=(("x-added", "yes"),), remove=("x-drop",))
    assert jason.response_headers == HeaderEdits(set=(("cache-control", "no-store"),))
    assert jason.timeout == 1.5
    assert jason.retries.attempts == 3
    assert jason.retries.per_try_timeout == 0.5
    assert jason.retries.retry_on == (
        "gateway-error",
        "connect-failure",
        "refused-stream",
        "retriable-status-codes",
    )
    assert jason.retries.retriable_status_codes == (503,)
    assert jason.fault is not None
    assert (jason.fault.delay, jason.fault.delay_percent) == (0.1, 10.5)
    assert (jason.fault.abort_http_status, jason.fault.abort_percent) == (503, 0.5)
    (mirror,) = jason.mirrors
    assert (mirror.host, mirror.subset, mirror.percent) == (REVIEWS, "v1", 25.0)
    grpc = routes[1]
    assert grpc.fault is not None
    assert (grpc.fault.abort_grpc_status, grpc.fault.abort_percent) == ("UNAVAILABLE", 100.0)
    assert grpc.matches[0].path == StringMatcher("regex", r"^/grpc\..*")
    old = routes[2]
    assert old.redirect is not None
    assert (old.redirect.path, old.redirect.authority, old.redirect.port) == (
        "/new",
        "details",
        8080,
    )
    assert (old.redirect.scheme, old.redirect.status) == ("https", 308)
    assert old.destinations == ()
    v1 = routes[3]
    assert v1.rewrite is not None
    assert (v1.rewrite.prefix, v1.rewrite.authority) == ("/", "reviews.shop")
    canary = routes[-1]
    assert [(d.host, d.subset, d.weight) for d in canary.destinations] == [
        (REVIEWS, "v1", 75),
        (REVIEWS, "v2", 25),
    ]
    assert canary.matches == ()


def test_delegated_routes(model):
    v2, rest = model.http_routes_for(REVIEWS, "shop")[4:6]
    assert v2.matches[0].path == StringMatcher("prefix", "/api/v2")
    assert rest.matches[0].path == StringMatcher("prefix", "/api")  # the root's match
    assert [(d.subset, v2.timeout) for d in v2.destinations] == [("v2", 2.0)]  # root timeout
    assert [d.subset for d in rest.destinations] == ["v1"]
    assert v2.origin.name == "reviews"


def test_cors_policy(model):
    cors = model.http_routes_for(REVIEWS, "shop")[-1].cors
    assert cors == CorsPolicy(
        allow_origins=(  # allowOrigins set: the deprecated allowOrigin is not read (Istio)
            StringMatcher("exact", "https://shop.example"),
            StringMatcher("prefix", "https://beta."),
            StringMatcher("regex", "https://[a-z]+[.]shop[.]example"),
        ),
        allow_methods=("GET", "POST", "OPTIONS"),
        allow_headers=("X-Foo-Bar", "content-type", "*"),
        expose_headers=("X-Trace-Id",),
        max_age=86400,
        allow_credentials=True,
        forward_unmatched_preflights=False,
    )
    assert model.http_routes_for(REVIEWS, "shop")[0].cors is None


def test_grpc_route(model):
    routes = model.http_routes[RATINGS]
    paths = [(r.name, r.matches[0].path) for r in routes]
    assert paths == [  # GRPCRoute precedence: longest service, method, most headers
        ("get", StringMatcher("exact", "/shop.Ratings/Get")),
        ("get", StringMatcher("regex", "/(?:shop[.].*)/(?:List.*)")),
        ("get", StringMatcher("regex", "/[^/]+/Ping")),
        (None, StringMatcher("path_prefix", "/")),
    ]
    first = routes[0].matches[0]
    assert (first.port, first.port_name) == (8080, "http2")
    assert dict(first.headers) == {
        "x-user": StringMatcher("exact", "jason"),
        "x-tier": StringMatcher("regex", "gold|silver"),
    }
    assert [(d.host, d.weight) for d in routes[0].destinations] == [(RATINGS, 9), (DETAILS, 1)]
    assert routes[0].destinations[0].request_headers == HeaderEdits(add=(("x-backend", "main"),))
    assert routes[0].request_headers == HeaderEdits(set=(("x-route", "get"),))
    assert routes[0].response_headers == HeaderEdits(remove=("x-internal",))
    (mirror,) = routes[0].mirrors
    assert (mirror.host, mirror.percent) == (RATINGS, 10.0)


def test_istio_defaults_for_routes(model):
    canary = model.http_routes_for(REVIEWS, "shop")[-1]
    assert canary.timeout is None
    assert canary.retries.attempts == 2
    assert "connect-failure" in canary.retries.retry_on
    assert canary.retries.retriable_status_codes == (503,)
    assert canary.fault is None
    assert canary.mirrors == ()


def test_tcp_routes(model):
    (route,) = model.tcp_routes[RATINGS]
    (match,) = route.matches
    assert (match.port, match.destination_subnets, dict(match.source_labels)) == (
        6379,
        ("10.0.0.0/8",),
        {"app": "reviews"},
    )
    assert [(d.host, d.port, d.weight) for d in route.destinations] == [
        (RATINGS, 6379, 60),
        (RATINGS, 6379, 40),
    ]


def test_destination_rule_layers(model):
    policy = model.destination_policies[REVIEWS]
    base = policy.settings_for()
    assert base.load_balancer == LoadBalancer("ROUND_ROBIN")
    assert base.connection_pool == ConnectionPool(
        max_connections=100,
        connect_timeout=0.25,
        max_pending_requests=10,
        max_requests=1000,
        max_requests_per_connection=5,
        max_retries=3,
        idle_timeout=30.0,
    )
    assert base.outlier_detection == OutlierPolicy(7, 2, 5.0, 60.0, 50, 20)
    assert base.tls_mode == "ISTIO_MUTUAL"
    port = policy.settings_for(port=9090)
    assert port.load_balancer == LoadBalancer("RANDOM")
    assert port.connection_pool.max_connections == 7
    assert port.connection_pool.connect_timeout == 10.0  # Istio's default, not inherited
    assert port.outlier_detection == OutlierPolicy(consecutive_5xx_errors=1)
    assert port.tls_mode == "DISABLE"
    v2 = policy.settings_for(subset="v2")
    assert v2.load_balancer == LoadBalancer(
        "RING_HASH", hash_on="header", hash_key="x-user", minimum_ring_size=1024
    )
    assert v2.connection_pool.max_connections == 100  # inherited from the rule
    assert policy.settings_for(subset="v1").load_balancer == LoadBalancer("ROUND_ROBIN")
    assert [s.name for s in policy.subsets] == ["v1", "v2"]
    assert dict(policy.subsets[1].labels) == {"version": "v2"}


def test_consistent_hash_keys(model):
    policy = model.destination_policies[RATINGS]
    cookie = policy.settings_for().load_balancer
    assert (cookie.policy, cookie.hash_on, cookie.hash_key) == ("RING_HASH", "cookie", "session")
    assert (cookie.cookie_path, cookie.cookie_ttl) == ("/", 3600.0)
    assert policy.settings_for(subset="by-ip").load_balancer.hash_on == "source_ip"
    query = policy.settings_for(subset="by-query").load_balancer
    assert (query.hash_on, query.hash_key) == ("query_parameter", "user")
    assert policy.settings_for(subset="least").load_balancer == LoadBalancer("LEAST_REQUEST")


def test_defaults_without_destination_rule(model):
    from tulle.api.model import DestinationPolicy, ResourceRef

    empty = DestinationPolicy(DETAILS, ResourceRef("DestinationRule", "shop", "x"))
    settings = empty.settings_for()
    assert settings.load_balancer == LoadBalancer("LEAST_REQUEST")  # Istio's default
    assert settings.connection_pool == ConnectionPool()
    assert settings.outlier_detection is None
    assert DETAILS not in model.destination_policies


def test_gateway_http_route(model):
    routes = model.http_routes[DETAILS]
    # Gateway API precedence: exact path first, then longest prefix; one model route per match.
    paths = [(r.name, r.matches[0].path) for r in routes]
    assert paths == [
        ("api", StringMatcher("exact", "/api/exact")),
        ("regex", StringMatcher("regex", "/items/[0-9]+")),
        ("api", StringMatcher("path_prefix", "/api")),
        ("moved", StringMatcher("path_prefix", "/old")),
        (None, StringMatcher("path_prefix", "/")),
    ]
    api = routes[2]
    (match,) = api.matches
    assert dict(match.headers) == {
        "x-version": StringMatcher("exact", "2"),
        "x-user": StringMatcher("regex", "[a-z]+"),
    }
    assert dict(match.query_params) == {"lang": StringMatcher("exact", "en")}
    assert (match.method, match.port) == (StringMatcher("exact", "GET"), 8080)
    assert api.request_headers == HeaderEdits(
        set=(("x-route", "api"),), add=(("x-added", "1"),), remove=("x-drop",)
    )
    assert api.response_headers == HeaderEdits(set=(("cache-control", "no-store"),))
    assert api.rewrite is not None
    assert (api.rewrite.prefix, api.rewrite.path, api.rewrite.authority) == (
        "/v2/api",
        None,
        "details.internal",
    )
    assert [(m.host, m.port, m.percent) for m in api.mirrors] == [(REVIEWS, 9080, 30.0)]
    assert [(d.host, d.port, d.weight) for d in api.destinations] == [
        (DETAILS, 8080, 3),
        (REVIEWS, 9080, 1),
    ]
    assert api.destinations[0].request_headers == HeaderEdits(set=(("x-backend", "main"),))
    assert (api.timeout, api.retries.per_try_timeout) == (2.0, 0.5)
    regex = routes[1]
    assert regex.rewrite is not None
    assert regex.rewrite.path == "/item"
    assert regex.mirrors[0].percent == 12.5
    moved = routes[3]
    assert moved.redirect is not None
    assert (moved.redirect.status, moved.redirect.scheme, moved.redirect.authority) == (
        301,
        "https",
        "details.example.com",
    )
    assert (moved.redirect.port, moved.redirect.path) == (8443, "/new")
    last = routes[4].matches[0]
    assert last.port == 8080  # parentRef port: only traffic to that port
    assert not last.is_catch_all
    assert RouteMatch(path=last.path).is_catch_all


def test_security_policies(model):
    peer = {p.origin.name: p for p in model.peer_authentications}
    assert (peer["default"].selector, peer["default"].mode) == (None, "PERMISSIVE")
    strict = peer["reviews-strict"]
    assert (strict.selector, strict.mode, strict.port_modes) == (
        (("app", "reviews"),),
        "STRICT",
        ((9090, "DISABLE"),),
    )
    assert peer["ratings-unset"].mode == "UNSET"
    authz = {p.origin.name: p for p in model.authorization_policies}
    allow = authz["reviews-allow"]
    assert (allow.action, allow.selector) == ("ALLOW", (("app", "reviews"),))
    (rule,) = allow.rules
    assert dict(rule.sources[0])["ipBlocks"] == ("127.0.0.0/8", "::1")
    assert dict(rule.sources[1])["notPrincipals"] == ("*/sa/untrusted",)
    operation = dict(rule.operations[0])
    assert operation["methods"] == ("GET", "HEAD")
    assert operation["notPorts"] == ("9090",)
    assert rule.conditions == (
        ("request.headers[x-tenant]", ("acme",), ()),
        ("source.namespace", (), ("sandbox",)),
    )
    assert authz["deny-admin"].action == "DENY"
    assert authz["audit-all"].rules[0].sources == ()
    deny_all = authz["deny-all"]
    assert (deny_all.action, deny_all.rules) == ("ALLOW", ())  # ALLOW with no rule denies all


def test_rate_limits(model):
    limits = {r.origin.name: r for r in model.rate_limits}
    inbound = limits["reviews-inbound"]
    assert (inbound.rate, inbound.burst, inbound.status_code, inbound.selector) == (
        100.0,
        150,
        503,
        (("app", "reviews"),),
    )
    outbound = limits["ratings-outbound"]
    assert (outbound.rate, outbound.burst, outbound.status_code) == (2.0, 120, 429)
    assert (outbound.target_host, outbound.target_route) == (REVIEWS, "canary")


def test_fallbacks(model):
    (fallback,) = model.fallbacks
    assert (fallback.host, fallback.to_host, fallback.to_port, fallback.when) == (
        REVIEWS, RATINGS, 9080, ("gateway-error", "unavailable"),
    )  # fmt: skip


def test_model_is_immutable(model):
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        model.settings.trust_domain = "x"
    with pytest.raises(TypeError):
        model.services["x"] = model.services[REVIEWS]
