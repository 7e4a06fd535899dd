"""CORS in the engine, as Envoy's CORS filter answers (Istio's VirtualService corsPolicy and the
Gateway API's HTTPRoute CORS filter, translated by the control plane): preflights answered by
the mesh, CORS headers on the responses to an allowed origin, none for another origin."""

from __future__ import annotations

import pytest

from tests.engine.conftest import Upstreams, build_engine, handle, run, workload
from tests.engine.outbound_config import TABLE, vs
from tulle.engine.message import Request, Response

pytestmark = pytest.mark.usefixtures("engine_path")

ENDPOINTS = {"v1": [("10.0.0.1", 80)]}
ISTIO = workload("v1") + vs("""\
    - match: [{uri: {prefix: /ignore}}]
      route: [{destination: {host: web}}]
      corsPolicy:
        allowOrigins: [{exact: https://app.example}]
        unmatchedPreflights: IGNORE
    - match: [{uri: {prefix: /aborted}}]
      fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
      route: [{destination: {host: web}}]
      corsPolicy: {allowOrigins: [{exact: https://app.example}], allowCredentials: true}
    - match: [{uri: {prefix: /legacy}}]
      route: [{destination: {host: web}}]
      corsPolicy: {allowOrigin: ["*"], allowMethods: [GET]}
    - match: [{uri: {prefix: /plain}}]
      route: [{destination: {host: web}}]
    - route: [{destination: {host: web}}]
      corsPolicy:
        allowOrigins: [{exact: https://app.example}, {regex: "https://.*[.]example[.]org"}]
        allowMethods: [POST, GET]
        allowHeaders: [X-Foo-Bar, Content-Type]
        exposeHeaders: [X-Trace]
        maxAge: 24h
        allowCredentials: true""")

GATEWAY = (
    workload("v1")
    + """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{kind: Service, group: "", name: web, port: 8080}]
  rules:
  - backendRefs: [{name: web, port: 8080}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: ["*"]
        allowHeaders: ["*"]
        exposeHeaders: [x-header-3]
        allowCredentials: true
"""
)


def send(config: str, method: str, path: str, headers: dict[str, str]) -> tuple[Response, int]:
    """The response to one request, and how many requests reached the upstream."""
    upstreams = Upstreams()
    engine = build_engine(config, ENDPOINTS, upstreams)
    request = Request(method, path, "web:8080", list(headers.items()))
    response = run(handle(engine, TABLE, request))
    return response, len(upstreams.calls)


def cors_headers(response: Response) -> dict[str, str]:
    return {k: v for k, v in response.headers if k.startswith("access-control-")}


PREFLIGHT = {"access-control-request-method": "POST"}


def test_a_preflight_from_an_allowed_origin_is_answered_by_the_mesh():
    asked = {**PREFLIGHT, "origin": "https://a.example.org", "access-control-request-headers": "x"}
    response, calls = send(ISTIO, "OPTIONS", "/items", asked)
    assert (response.status, calls) == (200, 0)
    assert cors_headers(response) == {
        "access-control-allow-origin": "https://a.example.org",
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "POST,GET",
        "access-control-allow-headers": "X-Foo-Bar,Content-Type",
        "access-control-max-age": "86400",
    }


def test_an_actual_request_from_an_allowed_origin_gets_the_headers_on_its_response():
    response, calls = send(ISTIO, "GET", "/items", {"origin": "https://app.example"})
    assert (response.status, calls) == (200, 1)
    assert cors_headers(response) == {
        "access-control-allow-origin": "https://app.example",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Trace",
    }


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_another_origin_gets_no_cors_headers_and_its_preflight_is_forwarded(method):
    headers = {**PREFLIGHT, "origin": "https://evil.example"}
    response, calls = send(ISTIO, method, "/items", headers)
    assert (response.status, calls) == (200, 1)  # the app answers; the browser will refuse
    assert cors_headers(response) == {}


def test_unmatched_preflights_ignore_answers_them_without_cors_headers():
    headers = {**PREFLIGHT, "origin": "https://evil.example"}
    response, calls = send(ISTIO, "OPTIONS", "/ignore", headers)
    assert (response.status, calls) == (200, 0)
    assert cors_headers(response) == {}


def test_options_without_a_requested_method_or_without_origin_is_not_a_preflight():
    # Forwarded as any request: from an allowed origin, its response gets the CORS headers.
    response, calls = send(ISTIO, "OPTIONS", "/items", {"origin": "https://app.example"})
    assert (calls, cors_headers(response)["access-control-allow-origin"]) == (
        1,
        "https://app.example",
    )
    response, calls = send(ISTIO, "OPTIONS", "/items", PREFLIGHT)
    assert (response.status, calls, cors_headers(response)) == (200, 1, {})


def test_the_mesh_own_answers_carry_the_cors_headers_too():
    response, calls = send(ISTIO, "GET", "/aborted", {"origin": "https://app.example"})
    assert (response.status, calls) == (503, 0)
    assert cors_headers(response)["access-control-allow-origin"] == "https://app.example"


def test_the_deprecated_allow_origin_star_allows_every_origin():
    headers = {**PREFLIGHT, "origin": "http://anything:3000"}
    response, _ = send(ISTIO, "OPTIONS", "/legacy/x", headers)
    assert cors_headers(response) == {
        "access-control-allow-origin": "http://anything:3000",
        "access-control-allow-methods": "GET",
    }


def test_a_route_without_cors_leaves_responses_and_preflights_alone():
    headers = {**PREFLIGHT, "origin": "https://app.example"}
    response, calls = send(ISTIO, "OPTIONS", "/plain", headers)
    assert (response.status, calls) == (200, 1)
    assert cors_headers(response) == {}


def test_gateway_api_cors_filter_wildcards():
    asked = {
        "origin": "https://api.eu.bar.com",
        "access-control-request-method": "DELETE",
        "access-control-request-headers": "x-a,x-b",
    }
    response, calls = send(GATEWAY, "OPTIONS", "/", asked)
    assert (response.status, calls) == (200, 0)
    assert cors_headers(response) == {
        "access-control-allow-origin": "https://api.eu.bar.com",
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "DELETE",  # "*" with credentials: the one asked for
        "access-control-allow-headers": "x-a,x-b",
        "access-control-max-age": "5",  # the Gateway API's default
    }
    # Another origin: answered (not forwarded), with no CORS header (HTTPCORSFilter).
    response, calls = send(GATEWAY, "OPTIONS", "/", {**asked, "origin": "https://bar.com.evil"})
    assert (response.status, calls, cors_headers(response)) == (200, 0, {})
    response, calls = send(GATEWAY, "GET", "/", {"origin": "https://www.foo.com"})
    assert calls == 1
    assert cors_headers(response)["access-control-expose-headers"] == "x-header-3"
