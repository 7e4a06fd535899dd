"""DestinationRule connection settings as users write them (the corpus's spellings): slow start
(``warmup``, ``warmupDurationSecs``), TCP keepalive, HTTP/2 PINGs, ``h2UpgradePolicy`` and
``workloadSelector`` — accepted, normalized with Istio's defaults, and bad values refused with
a finding that names the field."""

from __future__ import annotations

import pytest

from tulle.api import Severity, validate_text
from tulle.api.model import MeshModel
from tulle.api.model_destinations import Http2Keepalive, TcpKeepalive, Warmup

HOST = "ratings.prod.svc.cluster.local"


def rule(traffic_policy: str, extra: str = "", name: str = "r", namespace: str = "prod") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {HOST}
  trafficPolicy: {traffic_policy}
{extra}---
"""


def model_of(text: str) -> MeshModel:
    result = validate_text(text, known_hosts=[HOST])
    assert not [f for f in result.findings if f.severity is Severity.ERROR], result.findings
    assert result.model is not None
    return result.model


def errors_of(text: str) -> list[str]:
    found = validate_text(text, known_hosts=[HOST]).findings
    return [f"{f.field}: {f.message}" for f in found if f.severity is Severity.ERROR]


@pytest.mark.parametrize(
    ("load_balancer", "policy", "warmup"),
    [
        ("{warmup: {duration: 300s}}", "LEAST_REQUEST", Warmup(300.0, 10.0, 1.0)),
        (
            "{simple: ROUND_ROBIN, warmup: {duration: 1m, minimumPercent: 5.0, aggression: 5}}",
            "ROUND_ROBIN",
            Warmup(60.0, 5.0, 5.0),
        ),
        ("{simple: ROUND_ROBIN, warmupDurationSecs: 100s}", "ROUND_ROBIN", Warmup(100.0)),
        ("{simple: RANDOM, warmupDurationSecs: 100s}", "RANDOM", None),  # no slow start there
    ],
)
def test_warmup_is_read_with_istios_defaults(load_balancer, policy, warmup):
    model = model_of(rule(f"{{loadBalancer: {load_balancer}}}"))
    balancer = model.destination_policies[HOST].settings_for().load_balancer
    assert (balancer.policy, balancer.warmup) == (policy, warmup)


def test_warmup_where_it_has_no_effect_is_a_warning():
    result = validate_text(
        rule("{loadBalancer: {consistentHash: {httpHeaderName: x}, warmupDurationSecs: 10s}}"),
        known_hosts=[HOST],
    )
    assert [(f.severity, f.field) for f in result.findings] == [
        (Severity.WARNING, "spec.trafficPolicy.loadBalancer.warmupDurationSecs")
    ]
    assert "no effect with consistentHash" in result.findings[0].message


def test_connection_settings_are_read():
    model = model_of(
        rule(
            "{connectionPool: {tcp: {tcpKeepalive: {time: 7200s, interval: 75s, probes: 3}},"
            " http: {h2UpgradePolicy: UPGRADE, http2KeepAlive: {interval: 15s, timeout: 5s}}}}"
        )
    )
    pool = model.destination_policies[HOST].settings_for().connection_pool
    assert pool.tcp_keepalive == TcpKeepalive(time=7200, interval=75, probes=3)
    assert pool.h2_upgrade_policy == "UPGRADE"
    assert pool.http2_keepalive == Http2Keepalive(15.0, 5.0)
    default = model_of(rule("{connectionPool: {http: {h2UpgradePolicy: DEFAULT}}}"))
    assert (
        default.destination_policies[HOST].settings_for().connection_pool.h2_upgrade_policy is None
    )


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (
            "{connectionPool: {tcp: {tcpKeepalive: {time: 500ms}}}}",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time: '500ms': TCP keepalive "
            "counts whole seconds, from 1s to 32767s (what Linux accepts)",
        ),
        (
            "{connectionPool: {tcp: {tcpKeepalive: {interval: 10h}}}}",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval: '10h': TCP keepalive "
            "counts whole seconds, from 1s to 32767s (what Linux accepts)",
        ),
        (
            "{connectionPool: {tcp: {tcpKeepalive: {probes: 0}}}}",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes:",
        ),
        (
            "{connectionPool: {http: {h2UpgradePolicy: ALWAYS}}}",
            "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy:",
        ),
        (
            "{connectionPool: {http: {http2KeepAlive: {interval: 15s}}}}",
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout: required field",
        ),
        (
            "{loadBalancer: {warmup: {duration: 10s, aggression: 0.5}}}",
            "spec.trafficPolicy.loadBalancer.warmup.aggression:",
        ),
        (
            "{loadBalancer: {warmup: {duration: 10s, minimumPercent: 120}}}",
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent:",
        ),
        (
            "{loadBalancer: {warmup: {minimumPercent: 5}}}",
            "spec.trafficPolicy.loadBalancer.warmup.duration: required field",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_field(policy, error):
    found = errors_of(rule(policy))
    assert len(found) == 1, found
    assert found[0].startswith(error)


SELECTED = rule(
    "{loadBalancer: {simple: RANDOM}}",
    "  workloadSelector: {matchLabels: {app: ratings}}\n",
    name="for-ratings",
) + rule("{loadBalancer: {simple: ROUND_ROBIN}}", name="everyone")


@pytest.mark.parametrize(
    ("namespace", "labels", "chosen"),
    [
        ("prod", (("app", "ratings"), ("version", "v1")), "for-ratings"),
        ("prod", (("app", "reviews"),), "everyone"),
        ("prod", (), "everyone"),
        # A selector never reaches into another namespace, whatever the labels.
        ("test", (("app", "ratings"),), "everyone"),
    ],
)
def test_a_workload_selector_picks_the_clients_of_its_namespace(namespace, labels, chosen):
    model = model_of(SELECTED)
    policy = model.destination_policy_for(HOST, namespace, labels)
    assert policy is not None
    assert policy.origin.name == chosen


def test_workload_selectors_of_one_host_do_not_clash_unless_the_same():
    other = rule("{}", "  workloadSelector: {matchLabels: {app: reviews}}\n", name="for-reviews")
    assert errors_of(SELECTED + other) == []
    again = rule("{}", "  workloadSelector: {matchLabels: {app: ratings}}\n", name="twice")
    assert errors_of(SELECTED + again) == [
        f"spec.host: {HOST} already has DestinationRule prod/for-ratings at <text>:1 for the "
        "same workloadSelector; merge the two into one"
    ]


def test_a_selector_without_labels_and_one_no_workload_matches_are_warnings():
    workload = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: reviews, namespace: prod}
spec: {command: [reviews], ports: [{name: http, port: 9080}]}
---
"""
    empty = rule("{}", "  workloadSelector: {}\n", name="empty")
    nobody = rule("{}", "  workloadSelector: {matchLabels: {app: nobody}}\n", name="nobody")
    found = validate_text(workload + empty + nobody, known_hosts=[HOST]).findings
    warned = {(f.name, f.field): f.message for f in found if f.severity is Severity.WARNING}
    assert warned == {
        ("empty", "spec.workloadSelector"): "workloadSelector has no matchLabels: the rule "
        "applies to every client in namespace prod",
        ("nobody", "spec.workloadSelector.matchLabels"): "no Workload in namespace prod has "
        "labels app=nobody: the rule applies to no client (a workloadSelector never selects "
        "another namespace's)",
    }


def test_the_mesh_default_h2_upgrade_policy():
    mesh = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec: {h2UpgradePolicy: UPGRADE}
"""
    assert model_of(mesh).settings.h2_upgrade_policy == "UPGRADE"
    assert model_of(rule("{}")).settings.h2_upgrade_policy == "DO_NOT_UPGRADE"
