"""Config defined more than once, read as Kubernetes and Istio read it: the same resource twice
is the later definition (kubectl apply), DestinationRules of one host merge as Istio's
``mergeDestinationRule`` does, ServiceEntries of one host as Istio's registry does; what is
dropped is a WARNING, never silent."""

from __future__ import annotations

from tulle.api import validate_text
from tulle.api.findings import Severity

HOST = "ratings.default.svc.cluster.local"


def test_the_later_definition_of_a_resource_replaces_the_earlier():
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings.example.com]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: DNS
"""
    result = validate_text(text, "f.yaml")
    assert [f.format() for f in result.findings] == [
        "f.yaml:3: WARNING ServiceEntry default/ratings: metadata.name: ServiceEntry "
        "default/ratings is defined again at f.yaml:9: the later definition replaces this one, "
        "as kubectl apply does"
    ]
    assert result.model is not None
    assert [p.number for p in result.model.services["ratings.example.com"].ports] == [8080]
    assert len(result.resources) == 1


RULES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: first}
spec:
  host: ratings
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: second}
spec:
  host: ratings.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: third}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v1, labels: {version: v3}}, {name: v3, labels: {version: v3}}]
"""


def test_destination_rules_of_one_host_merge_as_istio_merges_them():
    result = validate_text(RULES, "dr.yaml")
    assert result.model is not None
    policy = result.model.destination_policies[HOST]
    # Subsets add up, the first of a name wins; the first top-level trafficPolicy (second's:
    # first has none) applies.
    assert [(s.name, s.labels) for s in policy.subsets] == [
        ("v1", (("version", "v1"),)),
        ("v2", (("version", "v2"),)),
        ("v3", (("version", "v3"),)),
    ]
    assert policy.settings_for().load_balancer.policy == "RANDOM"
    dropped = [(f.severity, f.name, f.field) for f in result.findings]
    assert dropped == [
        (Severity.WARNING, "third", "spec.trafficPolicy"),
        (Severity.WARNING, "third", "spec.subsets[0].name"),
    ]
    assert "DestinationRule default/second at dr.yaml:8" in result.findings[0].message


def test_service_entries_of_one_host_merge_their_endpoints():
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b}
spec:
  hosts: [db.example.com]
  ports: [{number: 5433, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.2}]
"""
    result = validate_text(text, "se.yaml")
    assert [(f.severity, f.name, f.field) for f in result.findings] == [
        (Severity.WARNING, "b", "spec.hosts[0]")
    ]
    assert result.model is not None
    service = result.model.services["db.example.com"]
    assert [p.number for p in service.ports] == [5432]
    assert [e.address for e in service.endpoints] == ["10.0.0.1", "10.0.0.2"]
    assert [o.name for o in service.origins] == ["a", "b"]


def test_an_empty_traffic_policy_counts_as_set_as_in_istio():
    """Istio tests the field's presence: a later rule's policy is dropped (and said so) after a
    rule that wrote ``trafficPolicy: {}``, and the model agrees with the warning."""
    text = RULES.replace(
        "  subsets: [{name: v1, labels: {version: v1}}]\n", "  trafficPolicy: {}\n", 1
    )
    result = validate_text(text, "dr.yaml")
    assert result.model is not None
    policy = result.model.destination_policies[HOST]
    dropped = [(f.name, f.field) for f in result.findings]
    assert dropped == [("second", "spec.trafficPolicy"), ("third", "spec.trafficPolicy")]
    assert policy.policy.load_balancer is None
