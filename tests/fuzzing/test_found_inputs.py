"""Every input a fuzz target found failing (fuzz/crashes/<target>/) is fed to the target again,
with all its checks: fixed, it passes. One that still fails a check pending a fix elsewhere
(fuzz/support/checks.py PENDING, where each is reported) is an expected failure; when the fix
lands, its entry must go (the last test says which have no failing input left)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fuzz.support.checks import PENDING, CheckError
from fuzz.support.runner import FUZZ
from tulle.api import validate_text

FOUND = sorted(path for path in (FUZZ / "crashes").glob("*/*") if path.is_file())


def failure_of(path: Path) -> CheckError | None:
    """The check the input fails now (None: it passes them all)."""
    target = importlib.import_module(f"fuzz.{path.parent.name}")
    try:
        target.one_input(path.read_bytes())
    except CheckError as failure:
        return failure
    return None


@pytest.mark.parametrize("path", FOUND, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_found_input_passes_every_check(path):
    failure = failure_of(path)
    if failure is not None and failure.name in PENDING:
        pytest.xfail(f"{failure.name}: {PENDING[failure.name]}")
    assert failure is None, str(failure)


def test_every_pending_check_still_has_a_failing_input():
    failing = {failure.name for failure in map(failure_of, FOUND) if failure is not None}
    fixed = sorted(set(PENDING) - failing)
    assert not fixed, f"no input fails these any more: remove them from PENDING: {fixed}"


PORT_LEVEL = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {%s: {mode: DISABLE}}
"""


@pytest.mark.parametrize("key", ["9090", '"9090"'])
def test_port_level_mtls_takes_a_port_as_yaml_or_json_writes_it(key):
    """Found by config_loader (port-level-mtls-json-keys): the API shows a resource as JSON,
    where a map's keys are strings; applied again, ``"9090"`` was refused as not a port."""
    result = validate_text(PORT_LEVEL % key)
    assert [f.format() for f in result.findings] == []
    (resource,) = result.resources
    assert list(resource.spec.port_level_mtls) == [9090]  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", ['"x"', '"99999"', '"0"', '"\uff19\uff10"'])
def test_port_level_mtls_still_refuses_what_is_not_a_port(key):
    result = validate_text(PORT_LEVEL % key)
    assert [f.field for f in result.findings] == [f"spec.portLevelMtls.{key.strip(chr(34))}"]


SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{number: 80, protocol: HTTP, name: http}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, weight: %(weight)s}, {address: 127.0.0.2, weight: %(weight)s}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    %(policy)s
"""
TOO_LARGE = {
    "outlierDetection: {consecutive5xxErrors: 4294967296}": "consecutive5xxErrors",
    "outlierDetection: {consecutiveGatewayErrors: 4294967296}": "consecutiveGatewayErrors",
    "connectionPool: {tcp: {maxConnections: 2147483648}}": "maxConnections",
    "connectionPool: {http: {http2MaxRequests: 2147483648}}": "http2MaxRequests",
    "connectionPool: {http: {maxRetries: 2147483648}}": "maxRetries",
    "connectionPool: {tcp: {connectTimeout: 99999999999999h}}": "connectTimeout",
    "loadBalancer: {consistentHash: {httpHeaderName: x, minimumRingSize: 8388609}}": "minimumRingSize",
}


@pytest.mark.parametrize("policy", list(TOO_LARGE))
def test_numbers_xds_cannot_carry_are_findings(policy):
    """Found by translator (consecutive-errors-past-uint32): a number past its xDS field's
    width was accepted, and the translation of every node then raised, so the control plane
    served nothing new. Now it is a finding at the field, as Istio's schema would say."""
    result = validate_text(SERVICE % {"weight": 1, "policy": policy})
    assert [f.field.rsplit(".", 1)[-1] for f in result.findings] == [TOO_LARGE[policy]]


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("httpCookie: {name: '', ttl: 0s}", "name"),
        ("httpQueryParameterName: ''", "httpQueryParameterName"),
    ],
)
def test_an_empty_hash_key_is_a_finding(key, field):
    """Found by translator (empty-hash-cookie-name): a consistent hash on a cookie with an
    empty name passed validation and became a RouteConfiguration Envoy's rules refuse."""
    result = validate_text(
        SERVICE % {"weight": 1, "policy": f"loadBalancer: {{consistentHash: {{{key}}}}}"}
    )
    assert [f.field.rsplit(".", 1)[-1] for f in result.findings] == [field]


def test_the_largest_numbers_still_translate():
    from tulle.control.snapshot import build_snapshot
    from tulle.control.translate import translate
    from tulle.control.translate.context import NodeView

    policy = "outlierDetection: {consecutive5xxErrors: 4294967295}"
    result = validate_text(SERVICE % {"weight": 4294967295, "policy": policy})
    assert result.model is not None, [f.format() for f in result.findings]
    resources = translate(build_snapshot(1, result.model, ()), NodeView("proxyless", "default"))
    (assignment, *_) = resources[
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    ].values()
    (locality,) = assignment.endpoints
    assert locality.load_balancing_weight.value == 4294967295  # the sum, at most a uint32


ROUTES = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  command: [web]
  ports: [{name: http, port: 8080}]
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: api}
spec:
  command: [api]
  ports: [{name: http, port: 9080}]
---
%s
"""
WRONG_PORTS = {
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\n"
    "spec: {hosts: [web], http: [{route: [{destination: {host: api, port: {number: 8080}}}]}]}": "spec.http[0].route[0].destination.port.number",
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\n"
    "spec: {hosts: [web], http: [{route: [{destination: {host: api}}],"
    " mirror: {host: web, port: {number: 1}}}]}": "spec.http[0].mirror.port.number",
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n"
    "spec: {parentRefs: [{group: '', kind: Service, name: web, port: 8080}], rules: [{backendRefs: [{name: api, port: 8080}]}]}": "spec.rules[0].backendRefs[0].port",
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n"
    "spec: {parentRefs: [{group: '', kind: Service, name: web, port: 9080}], rules: [{backendRefs: [{name: api, port: 9080}]}]}": "spec.parentRefs[0].port",
}


@pytest.mark.parametrize("route", list(WRONG_PORTS))
def test_a_route_to_a_port_its_service_lacks_is_a_finding(route):
    """Found by translator (route-to-a-port-the-service-lacks): an HTTPRoute's backend on a
    port its Service does not have validated, and its route named a cluster no node had."""
    result = validate_text(ROUTES % route)
    errors = [f for f in result.findings if f.severity.value == "ERROR"]
    assert [f.field for f in errors] == [WRONG_PORTS[route]], [f.format() for f in errors]
    assert "is not a port of" in errors[0].message


def test_a_route_to_a_port_of_a_service_known_only_from_the_registry_is_not_checked():
    route = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\n"
        "spec: {hosts: [web], http: [{route: [{destination: {host: remote, port: {number: 1}}}]}]}"
    )
    result = validate_text(ROUTES % route, known_hosts=["remote.default.svc.cluster.local"])
    assert [f.format() for f in result.findings] == []


HEADER_EDITS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.example.com]
  ports: [{number: 80, protocol: HTTP, name: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web.example.com]
  http:
  - %s
    route: [{destination: {host: web.example.com}}]
"""
BAD_HEADERS = {
    'headers: {request: {remove: [""]}}': "spec.http[0].headers.request.remove[0]",
    'headers: {request: {set: {"x a": "1"}}}': "spec.http[0].headers.request.set.x a",
    'headers: {response: {add: {x-a: "1\\r\\nx-b: 2"}}}': "spec.http[0].headers.response.add.x-a",
    'match: [{headers: {"": {exact: "1"}}}]': "spec.http[0].match[0].headers.",  # (the key is "")
}


@pytest.mark.parametrize("edit", list(BAD_HEADERS))
def test_header_names_and_values_envoy_refuses_are_findings(edit):
    """Found by translator: ``remove: [""]`` validated and became a route Envoy NACKs
    (request_headers_to_remove: at least 1 character). Header names are tokens, values hold no
    CR, LF or NUL, wherever config names or writes a header."""
    result = validate_text(HEADER_EDITS % edit)
    assert [f.field for f in result.findings] == [BAD_HEADERS[edit]], [
        f.format() for f in result.findings
    ]


VERSIONS = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec:
  service: reviews
  command: [reviews]
  ports: [{name: http, port: 9080}]
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v2}
spec:
  service: reviews
  command: [reviews]
  ports: [%s]
"""


@pytest.mark.parametrize(
    "port", ["{name: web, port: 9080}", "{name: http, port: 9080, protocol: HTTP2}"]
)
def test_versions_of_a_service_that_disagree_on_a_port_are_a_finding(port):
    """Found by translator: two Workloads of one service named port 9080 differently; the
    service then had port 9080 twice, and its sidecars' route configuration for 9080 had every
    domain twice, which Envoy refuses whole."""
    result = validate_text(VERSIONS % port)
    assert [(f.name, f.field) for f in result.findings] == [("reviews-v2", "spec.ports[0]")]
    assert "must agree on its ports" in result.findings[0].message


def test_versions_of_a_service_that_agree_on_a_port_are_one_port():
    result = validate_text(VERSIONS % "{name: http, port: 9080}, {name: grpc, port: 9090}")
    assert result.model is not None, [f.format() for f in result.findings]
    (service,) = result.model.services.values()
    assert [p.number for p in service.ports] == [9080, 9090]


def test_two_matches_of_one_header_name_keep_the_first():
    """Found by translator (two-header-matches-of-one-name): an HTTPRoute match with two
    headers of one name (case aside) made validation raise TypeError, sorting two matchers.
    The Gateway API says only the first entry of a name is considered."""
    route = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n"
        "spec: {parentRefs: [{kind: Service, group: '', name: web, port: 8080}], rules: [{"
        "matches: [{headers: [{name: X-A, value: one}, {name: x-a, value: two}],"
        " queryParams: [{name: q, value: '1'}, {name: q, value: '2'}]}],"
        " backendRefs: [{name: api, port: 9080}]}]}"
    )
    result = validate_text(ROUTES % route)
    assert result.model is not None, [f.format() for f in result.findings]
    (rule,) = [r for host, rs in result.model.http_routes.items() if "web" in host for r in rs]
    (match,) = rule.matches
    assert [(name, m.value) for name, m in match.headers] == [("x-a", "one")]
    assert [(name, m.value) for name, m in match.query_params] == [("q", "1")]
