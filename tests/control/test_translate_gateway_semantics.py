"""Gateway API and Istio semantics through translation and into the engine that sidecars and
the library run: RequestRedirect's 303, 307 and 308 (the engine answers with the code given), a
rule without backendRefs (500: "the rule performs no forwarding"), VirtualService weights that
do not add up to 100 (relative: weight / sum), and PeerAuthentication ``portLevelMtls`` keys
written as strings, as ``kubectl get -o yaml`` prints them."""

from __future__ import annotations

from typing import Any

import pytest

from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.config import compile_route_table
from tulle.engine.routes import RouteEntry
from tulle.xds import types

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: %s}
spec:
  ports: [{name: http, port: 8080}]
---
"""

ROUTE = (
    SERVICE % "web"
    + SERVICE % "api"
    + """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {value: /see-other}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /b}, statusCode: 303}}]
    - matches: [{path: {value: /temporary}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: api, statusCode: 307}}]
    - matches: [{path: {value: /permanent}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 308}}]
    - matches: [{path: {value: /nothing}}]
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: "1"}]}}]
    - backendRefs: [{name: api, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
    - route:
        - destination: {host: api}
          weight: 1
        - destination: {host: web}
          weight: 3
"""
)


def _table(host: str) -> Any:
    result = validate_text(ROUTE)
    assert result.model is not None, [f.format() for f in result.findings]
    routes = translate(build_snapshot(1, result.model, ()), NodeView("sidecar", "default"))
    return compile_route_table(routes[types.ROUTE][f"{host}.default.svc.cluster.local:8080"])


def _routes(host: str) -> list[RouteEntry]:
    (vhost,) = _table(host).virtual_hosts
    return list(vhost.routes)


@pytest.mark.parametrize(("index", "code"), [(0, 303), (1, 307), (2, 308)])
def test_redirect_codes_reach_the_engine(index: int, code: int):
    redirect = _routes("web")[index].redirect
    assert redirect is not None
    assert redirect.status == code


def test_a_rule_without_backends_answers_500():
    nothing = _routes("web")[3]
    assert nothing.redirect is None
    assert nothing.fault is not None
    assert (nothing.fault.abort_status, nothing.fault.abort_chance) == (500, 1.0)
    forward = _routes("web")[4]
    assert forward.fault is None
    assert [c.name for c in forward.clusters] == ["outbound|8080||api.default.svc.cluster.local"]


def test_weights_are_relative():
    (split,) = _routes("api")
    assert [(c.name, c.weight) for c in split.clusters] == [
        ("outbound|8080||api.default.svc.cluster.local", 1),
        ("outbound|8080||web.default.svc.cluster.local", 3),
    ]


def test_port_level_mtls_keys_as_strings():
    text = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls:
    "8080": {mode: PERMISSIVE}
    9090: {mode: DISABLE}
"""
    result = validate_text(text)
    assert result.model is not None, [f.format() for f in result.findings]
    (policy,) = result.model.peer_authentications
    assert policy.port_modes == ((8080, "PERMISSIVE"), (9090, "DISABLE"))
