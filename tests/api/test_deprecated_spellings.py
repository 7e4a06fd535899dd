"""The deprecated spellings Istio still honours are read as the fields that replaced them, each
with a WARNING naming the new spelling: outlierDetection ``consecutiveErrors`` (Istio: consecutive
gateway errors, with consecutive 5xx off), VirtualService ``mirrorPercent`` and a fault's
``delay.percent`` (integer percents); the new spelling wins when both are set; bad values are
refused at the old field."""

from __future__ import annotations

import pytest

from tulle.api import Severity, validate_text

RULES = """\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutiveErrors: 3, interval: 1s}
  subsets:
    - name: v1
      labels: {version: v1}
      trafficPolicy:
        outlierDetection: {consecutiveErrors: 2, consecutiveGatewayErrors: 7}
    - name: v2
      labels: {version: v2}
      trafficPolicy:
        outlierDetection: {consecutiveErrors: 4, consecutive5xxErrors: 5}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: v}
spec:
  hosts: [reviews]
  http:
    - match: [{uri: {prefix: /a}}]
      route: [{destination: {host: reviews, subset: v1}}]
      mirror: {host: reviews, subset: v2}
      mirrorPercent: 25
      fault: {delay: {fixedDelay: 1s, percent: 10}}
    - route: [{destination: {host: reviews}}]
      mirror: {host: reviews, subset: v2}
      mirrorPercent: 25
      mirrorPercentage: {value: 5}
      fault: {delay: {fixedDelay: 1s, percent: 10, percentage: {value: 50}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
"""
HOST = "reviews.default.svc.cluster.local"


def test_read_as_the_new_fields_with_a_warning_each():
    result = validate_text(RULES)
    assert result.model is not None, [f.format() for f in result.findings]
    warnings = {f.field: f.message for f in result.findings if f.severity is Severity.WARNING}
    assert warnings == {
        "spec.trafficPolicy.outlierDetection.consecutiveErrors": (
            "consecutiveErrors is deprecated: read as Istio reads it, consecutiveGatewayErrors: 3 "
            "(502, 503 and 504 count), with consecutive5xxErrors off; write "
            "consecutiveGatewayErrors instead"
        ),
        "spec.subsets[0].trafficPolicy.outlierDetection.consecutiveErrors": (
            "consecutiveErrors is deprecated, and ignored here: consecutiveGatewayErrors is set "
            "(Istio reads consecutiveErrors as consecutiveGatewayErrors)"
        ),
        "spec.subsets[1].trafficPolicy.outlierDetection.consecutiveErrors": (
            "consecutiveErrors is deprecated: read as Istio reads it, consecutiveGatewayErrors: 4 "
            "(502, 503 and 504 count); write consecutiveGatewayErrors instead"
        ),
        "spec.http[0].mirrorPercent": (
            "mirrorPercent is deprecated: read as mirrorPercentage: {value: 25}; write that instead"
        ),
        "spec.http[0].fault.delay.percent": (
            "percent is deprecated: read as percentage: {value: 10}; write that instead"
        ),
        "spec.http[1].mirrorPercent": (
            "mirrorPercent is deprecated, and ignored here: mirrorPercentage is set (Istio reads "
            "mirrorPercentage first)"
        ),
        "spec.http[1].fault.delay.percent": (
            "percent is deprecated, and ignored here: percentage is set (Istio reads percentage "
            "first)"
        ),
    }
    policy = result.model.destination_policies[HOST]
    outliers = [
        policy.settings_for(subset, None).outlier_detection for subset in (None, "v1", "v2")
    ]
    assert all(o is not None for o in outliers)
    assert [
        (o.consecutive_gateway_errors, o.consecutive_5xx_errors) for o in outliers if o is not None
    ] == [
        (3, 0),  # Istio: gateway errors, 5xx detection off
        (7, 0),
        (4, 5),
    ]
    first, second = result.model.http_routes[HOST]
    assert [m.percent for m in first.mirrors] == [25.0]
    assert first.fault is not None
    assert first.fault.delay_percent == 10.0
    assert [m.percent for m in second.mirrors] == [5.0]
    assert second.fault is not None
    assert second.fault.delay_percent == 50.0


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("consecutiveErrors: 3", "consecutiveErrors: -1",
         "spec.trafficPolicy.outlierDetection.consecutiveErrors", "greater than or equal to 0"),
        ("mirrorPercent: 25\n      fault", "mirrorPercent: 150\n      fault",
         "spec.http[0].mirrorPercent", "less than or equal to 100"),
        ("percent: 10}}\n    - route", "percent: '10'}}\n    - route",
         "spec.http[0].fault.delay.percent", "integer"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_at_the_old_field(old: str, new: str, field: str, message: str):
    assert RULES.count(old) == 1
    errors = [
        f for f in validate_text(RULES.replace(old, new)).findings if f.severity is Severity.ERROR
    ]
    assert [f.field for f in errors] == [field], [f.format() for f in errors]
    assert message in errors[0].message
