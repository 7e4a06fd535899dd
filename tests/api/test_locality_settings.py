"""A DestinationRule's ``localityLbSetting`` as Istio validates it (errors naming the field), the
WARNING for failover without outlier detection, the model it becomes, and a Workload's
``locality``."""

from __future__ import annotations

import pytest

from tulle.api import validate_text
from tulle.api.model_locality import LocalityLbPolicy

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: helloworld}}
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting: {setting}
{outlier}"""
OUTLIER = "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}\n"


def findings(setting: str, outlier: str = OUTLIER) -> list[str]:
    result = validate_text(RULE.format(setting=setting, outlier=outlier))
    return [f"{f.severity.name} {f.field}: {f.message}" for f in result.findings]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            "{distribute: [{from: region1/*, to: {region1/*: 100}}], failover: [{from: r1, to: r2}]}",
            "localityLbSetting.failover: set distribute or failover, not both",
        ),
        (
            "{distribute: [{from: region1/*, to: {region1/*: 80, region2/*: 10}}]}",
            "localityLbSetting.distribute[0].to: the weights add up to 90, not 100",
        ),
        (
            "{distribute: [{from: region1/*, to: {region1/*: 0, region2/*: 100}}]}",
            "localityLbSetting.distribute[0].to.region1/*: must be greater than or equal to 1, got 0",
        ),
        (
            "{distribute: [{from: 'region1/zone*', to: {'*': 100}}]}",
            "localityLbSetting.distribute[0].from: 'region1/zone*': '*' may only be the whole last "
            "part of a locality (region1/*, *)",
        ),
        (
            "{failover: [{from: region1, to: region1}]}",
            "localityLbSetting.failover[0].to: failover from region1 to itself: name another region",
        ),
        (
            "{failover: [{from: region1/zone1, to: region2}]}",
            "localityLbSetting.failover[0].from: 'region1/zone1': failover names regions only "
            "(no zone: no '/')",
        ),
        (
            "{failover: [{from: region1, to: region2}], "
            "failoverPriority: [topology.kubernetes.io/region]}",
            "localityLbSetting.failoverPriority[0]: 'topology.kubernetes.io/region': a topology "
            "label cannot be used with failover (failover already orders the regions)",
        ),
        (
            "{failoverPriority: ['network=']}",
            "localityLbSetting.failoverPriority[0]: 'network=': write a label name, or name=value "
            "to fix the value",
        ),
    ],
)
def test_bad_settings_are_errors_naming_the_field(setting: str, expected: str) -> None:
    found = findings(setting)
    assert [f for f in found if f.startswith("ERROR")] == [
        f"ERROR spec.trafficPolicy.loadBalancer.{expected}"
    ]


def test_failover_without_outlier_detection_is_a_warning_as_in_istio() -> None:
    path = "spec.trafficPolicy.loadBalancer.localityLbSetting"
    for field in ("failover: [{from: region1, to: region2}]", "failoverPriority: [network]"):
        name = field.split(":")[0]
        assert findings(f"{{{field}}}", outlier="") == [
            f"WARNING {path}.{name}: outlier detection policy must be provided for failover (as "
            f"Istio warns): without outlierDetection beside it, {name} has no effect"
        ]
        assert findings(f"{{{field}}}") == []  # with outlier detection: nothing to say
    # distribute needs none; a disabled setting neither.
    assert findings("{distribute: [{from: '*', to: {'*': 100}}]}", outlier="") == []
    assert findings("{enabled: false, failover: [{from: a, to: b}]}", outlier="") == []


def test_the_model_keeps_the_setting_in_the_load_balancer() -> None:
    setting = (
        "{enabled: true, failover: [{from: region1, to: region2}], "
        "failoverPriority: [network, 'tier=gold'], "
        "distribute: []}"
    )
    result = validate_text(RULE.format(setting=setting, outlier=OUTLIER))
    assert result.model is not None, [f.format() for f in result.findings]
    policy = result.model.destination_policy_for("helloworld.sample.svc.cluster.local", "default")
    assert policy is not None
    balancer = policy.settings_for().load_balancer
    assert balancer.policy == "LEAST_REQUEST"  # no simple: Istio's default algorithm
    assert balancer.locality == LocalityLbPolicy(
        enabled=True,
        failover=(("region1", "region2"),),
        failover_priority=("network", "tier=gold"),
    )


@pytest.mark.parametrize(
    ("locality", "error"),
    [
        ("region1/zone1/rack7", None),
        ("region1", None),
        ("region1//rack", "'region1//rack' is not a locality: write region, region/zone or "
                          "region/zone/subzone"),
    ],
)  # fmt: skip
def test_a_workload_has_a_locality(locality: str, error: str | None) -> None:
    text = f"""\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: curl}}
spec: {{command: [curl], locality: "{locality}"}}
"""
    result = validate_text(text)
    errors = [f.message for f in result.findings if f.severity.name == "ERROR"]
    if error is None:
        assert result.model is not None
        assert errors == []
        assert result.model.workloads[0].locality == locality
    else:
        assert errors == [error]
