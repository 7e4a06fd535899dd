"""Multi-cluster services in Gateway API routes (KEP-1645, GEP-1748, as the Gateway API's own
multicluster examples write them): a ServiceImport, as a parentRef or a backendRef, names the
host ``<name>.<namespace>.svc.clusterset.local``, as Istio reads it; a ServiceImport outside
group ``multicluster.x-k8s.io`` is refused naming the group."""

from __future__ import annotations

from tulle.api import validate_text
from tulle.api.findings import Severity

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store}
spec:
  parentRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: store}]
  rules:
    - matches: [{path: {value: /cart}}]
      backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: cart}]
    - backendRefs: [{group: "", kind: Service, name: store, port: 8080}]
"""

ENTRIES = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: clusterset}
spec:
  hosts: [store.default.svc.clusterset.local, cart.default.svc.clusterset.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: store}
spec:
  hosts: [store.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: DNS
"""


def test_service_imports_name_their_clusterset_hosts():
    result = validate_text(ROUTE + ENTRIES, "mcs.yaml")
    assert [f.format() for f in result.findings] == []
    assert result.model is not None
    routes = result.model.http_routes["store.default.svc.clusterset.local"]
    destinations = [[(d.host, d.port) for d in route.destinations] for route in routes]
    # A ServiceImport's port may be left out (the port the request came to), a Service's not.
    assert destinations == [
        [("cart.default.svc.clusterset.local", None)],
        [("store.default.svc.cluster.local", 8080)],
    ]


def test_an_undefined_service_import_is_a_warning_naming_its_host():
    findings = validate_text(ROUTE, "mcs.yaml").findings
    assert [(f.severity, f.field) for f in findings] == [
        (Severity.WARNING, "spec.parentRefs[0].name"),
        (Severity.WARNING, "spec.rules[0].backendRefs[0].name"),
        (Severity.WARNING, "spec.rules[1].backendRefs[0].name"),
    ]
    assert "ServiceImport cart (cart.default.svc.clusterset.local)" in findings[1].message


def test_a_service_import_outside_its_group_is_refused():
    text = ROUTE.replace(
        "[{group: multicluster.x-k8s.io, kind: ServiceImport, name: cart}]",
        "[{kind: ServiceImport, name: cart, port: 80}]",
    )
    errors = [f for f in validate_text(text, "mcs.yaml").findings if f.severity is Severity.ERROR]
    assert [(f.field, f.message) for f in errors] == [
        (
            "spec.rules[0].backendRefs[0].group",
            "a ServiceImport is in group 'multicluster.x-k8s.io'",
        )
    ]
