"""Parity scenarios for routing features (issue 19): CORS (a VirtualService corsPolicy, with
real preflights from httpx and curl), GRPCRoute with a Service parent (a stock grpcio client
in proxyless mode; the same routes as HTTP calls through a sidecar and the library) and
VirtualService delegation for mesh traffic. Each runs in every mode; grpcio's gaps are
asserted, as docs/library.md tables them."""

from __future__ import annotations

import collections
import shutil
import subprocess

from tests.e2e.conftest import ControlPlane
from tests.manifests import virtual_service
from tests.scenarios.conftest import Caller, SidecarCaller, get_all
from tests.scenarios.test_parity import apply

WEB = "http://web:8080"
ORIGIN = "https://app.example"
PREFLIGHT = {"origin": ORIGIN, "access-control-request-method": "PUT",
             "access-control-request-headers": "x-token"}  # fmt: skip

CORS = """\
    - route: [{destination: {host: web}}]
      corsPolicy:
        allowOrigins: [{exact: "https://app.example"}, {regex: "https://.*[.]example[.]org"}]
        allowMethods: [GET, PUT]
        allowHeaders: [x-token]
        exposeHeaders: [x-backend]
        maxAge: 10m
        allowCredentials: true"""


def _cors(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("access-control-")}


def _options(caller: Caller, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    """A preflight through the caller's httpx client: status, who answered, CORS headers."""
    response = caller.client.request("OPTIONS", f"{WEB}/items", headers=headers)  # type: ignore[attr-defined]
    return response.status_code, response.headers.get("x-backend", "-"), _cors(response.headers)


def test_cors_preflights_and_responses(control_plane: ControlPlane, serve, caller_for, mode):
    serve(a={})
    control_plane.apply(virtual_service(CORS))
    caller = caller_for()
    actual = caller.get(f"{WEB}/items", {"origin": ORIGIN})
    other = caller.get(f"{WEB}/items", {"origin": "https://evil.example"})
    assert (actual.status, actual.backend, other.backend) == (200, "a", "a")
    assert _cors(other.headers) == {}  # an origin that does not match gets no CORS header
    if mode == "proxyless":  # gap: no CORS for grpcio (not a browser; no CORS filter in its
        assert _cors(actual.headers) == {}  # xDS client): the control plane sends it none
        assert actual.sent.get("origin") == ORIGIN
        return
    assert _cors(actual.headers) == {
        "access-control-allow-origin": ORIGIN,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-backend",
    }
    assert _options(caller, PREFLIGHT) == (
        200,
        "-",  # answered by the mesh: the app never sees a preflight from an allowed origin
        {
            "access-control-allow-origin": ORIGIN,
            "access-control-allow-credentials": "true",
            "access-control-allow-methods": "GET,PUT",
            "access-control-allow-headers": "x-token",
            "access-control-max-age": "600",
        },
    )
    # A preflight from another origin goes to the app (unmatchedPreflights: FORWARD, the
    # default): the test backend (http.server) has no OPTIONS and answers 501 Unsupported
    # method, with no Allow-Origin, so a browser refuses.
    assert _options(caller, {**PREFLIGHT, "origin": "https://evil.example"}) == (501, "-", {})
    if mode == "sidecar":  # curl, as a browser's preflight, through the sidecar as its proxy
        assert isinstance(caller, SidecarCaller)
        curl = shutil.which("curl")
        assert curl is not None
        out = subprocess.run(
            [curl, "-sS", "-i", "-X", "OPTIONS", "-x", caller.sidecar.proxy_url,
             "-H", "Origin: https://a.example.org", "-H", "Access-Control-Request-Method: GET",
             f"{WEB}/items"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        lines = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip()
                 for line in out.splitlines()[1:] if ":" in line}  # fmt: skip
        assert out.startswith("HTTP/1.1 200")
        assert lines["access-control-allow-origin"] == "https://a.example.org"
        assert "x-backend" not in lines


GRPC_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules:
  - matches:
    - method: {service: shop.Cart, method: Get}
      headers: [{name: x-user, value: jason}]
    - method: {type: RegularExpression, service: "shop[.]Ord.*", method: "List|Find"}
    backendRefs: [{name: canary, port: 8080}]
  - matches: [{method: {method: Ping}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-route, value: ping}]}
    backendRefs: [{name: canary, port: 8080}]
  - matches: [{method: {service: shop.Cart}}]
    backendRefs: [{name: web, port: 8080, weight: 3}, {name: canary, port: 8080, weight: 1}]
  - backendRefs: [{name: web, port: 8080}]
"""


def test_grpc_route_with_a_service_parent(control_plane: ControlPlane, serve, caller_for, mode):
    serve(main={})
    serve(service="canary", spare={})
    control_plane.apply(GRPC_ROUTE)
    caller = caller_for()
    assert caller.get(f"{WEB}/shop.Cart/Get", {"x-user": "jason"}).backend == "spare"
    assert caller.get(f"{WEB}/shop.Orders/List").backend == "spare"
    assert caller.get(f"{WEB}/shop.Orders/Delete").backend == "main"  # method not matched
    assert caller.get(f"{WEB}/other.Thing/Find").backend == "main"  # service not matched
    assert caller.get(f"{WEB}/shop.Catalog/Get").backend == "main"  # the last rule: all calls
    ping = caller.get(f"{WEB}/health.Check/Ping")
    assert ping.backend == "spare"
    if mode == "proxyless":  # gap: grpcio applies no header edits (as for a VirtualService)
        assert "x-route" not in ping.sent
    else:
        assert ping.sent.get("x-route") == "ping"
    # shop.Cart/Get without x-user falls to the service rule: weights 3:1.
    counts = collections.Counter(o.backend for o in get_all(caller, f"{WEB}/shop.Cart/Get", 200))
    assert counts["main"] + counts["spare"] == 200
    assert 0.11 <= counts["spare"] / 200 <= 0.39  # 25% ± 4.6 standard deviations (3.1% each)


DELEGATE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-cart}
spec:
  http:
  - match: [{uri: {exact: /shop.Cart/Get}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /shop.Orders/}}]
    route: [{destination: {host: web, subset: v2}}]
---
"""


def test_delegation_applies_to_mesh_traffic(control_plane: ControlPlane, serve, caller_for, mode):
    """Istio merges a delegate into its root before choosing gateways or sidecars: a root bound
    to the mesh (no gateways) delegates for every caller, in every mode."""
    serve(a={"version": "v1"}, b={"version": "v2"})
    apply(
        control_plane,
        """\
    - match: [{uri: {prefix: /shop.Cart/}, headers: {x-user: {exact: jason}}}]
      delegate: {name: web-cart}
    - route: [{destination: {host: web, subset: v1}}]""",
        extra=DELEGATE,
    )
    caller = caller_for()
    assert caller.get(f"{WEB}/shop.Cart/Get", {"x-user": "jason"}).backend == "b"
    assert caller.get(f"{WEB}/shop.Cart/Get").backend == "a"  # the root's header match holds
    assert caller.get(f"{WEB}/shop.Cart/List", {"x-user": "jason"}).backend == "a"
    # /shop.Orders/ is not within the root's /shop.Cart/: that delegate route is dropped.
    assert caller.get(f"{WEB}/shop.Orders/List", {"x-user": "jason"}).backend == "a"
