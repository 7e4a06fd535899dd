"""Istio and Gateway API kinds Tulle does not implement, through the control plane's config
sources: an ignored kind (EnvoyFilter, Sidecar...) is never stored and says so (a WARNING that
names it and says it is not applied, beside what the same apply does store); a kind at the
mesh's edges (a Gateway) refuses the apply with one finding naming what is not supported yet;
-f files say the same as the control plane loads them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tulle.control.admission_validate import own_errors
from tulle.control.config import ConfigSources
from tulle.control.store import StateStore

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  ports: [{name: http, port: 9080}]
"""

ENVOY_FILTER = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua}
spec: {configPatches: []}
"""

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress}
spec: {selector: {istio: ingressgateway}}
"""


@pytest.fixture
def sources(tmp_path: Path) -> Iterator[ConfigSources]:
    store = StateStore(tmp_path / "state")
    result = ConfigSources([], store)
    result.load()
    yield result
    store.close()


def test_an_ignored_kind_is_reported_and_never_stored(sources: ConfigSources):
    applied = sources.apply(f"{SERVICE}---\n{ENVOY_FILTER}", "mixed.yaml")
    assert applied.accepted
    assert applied.created == (("Service", "default", "ratings"),)
    (warning,) = [f for f in applied.findings if f.kind == "EnvoyFilter"]
    assert warning.severity.value == "WARNING"
    assert warning.name == "lua"
    assert "EnvoyFilter is ignored: Tulle does not implement it" in warning.message
    assert warning.message.endswith("not applied")
    assert list(sources.store.resources()) == [("Service", "default", "ratings")]


def test_a_kind_at_the_edges_refuses_the_apply(sources: ConfigSources):
    refused = sources.apply(f"{SERVICE}---\n{GATEWAY}", "edge.yaml")
    assert not refused.accepted
    (error,) = [f for f in refused.findings if f.severity.value == "ERROR"]
    assert (error.kind, error.field) == ("Gateway", "kind")
    assert error.message == (
        "Istio Gateway is not supported yet: ingress and egress gateways come in a later issue"
    )
    assert "did you mean" not in error.message
    assert sources.store.resources() == {}


def test_files_report_an_ignored_kind_once(tmp_path: Path):
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "mixed.yaml").write_text(f"{SERVICE}---\n{ENVOY_FILTER}")
    store = StateStore(tmp_path / "state")
    try:
        sources = ConfigSources([tmp_path / "mesh"], store)
        result = sources.load()
        assert result.ok
        assert result.model is not None
        assert "ratings.default.svc.cluster.local" in result.model.services
        warnings = [f for f in result.findings if f.severity.value == "WARNING"]
        assert [(f.kind, f.name) for f in warnings] == [("EnvoyFilter", "lua")]
    finally:
        store.close()


INGRESS_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ingress, namespace: shop}
spec:
  parentRefs: [{name: edge-gateway}]
  rules: [{backendRefs: [{name: storefront, port: 80}]}]
"""


def test_the_webhook_admits_another_controllers_ingress_route():
    """An HTTPRoute attached to a Gateway belongs to whoever implements the Gateway: the
    validating webhook leaves it to them, with Tulle's warning."""
    errors, rest = own_errors(INGRESS_ROUTE, ())
    assert errors == []
    assert [(f.severity.value, f.field) for f in rest] == [("WARNING", "spec.parentRefs[0]")]
    assert rest[0].message.endswith("; ignored")
