"""Cross checks of a DestinationRule's ``localityLbSetting`` and ``zoneAwareLbSetting`` that the
schema alone cannot judge: failover without outlier detection beside it, which (as in Istio)
never fails over; a ``zoneAwareLbSetting`` that does not say ``enabled: true``, which is off,
or that sits beside ``consistentHash``, which does not route by zone."""

from __future__ import annotations

from collections.abc import Iterator

from tulle.api.check_context import Context
from tulle.api.checks_destinations import traffic_policies
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import DestinationRule

WARNING = Severity.WARNING


def check_locality_failover(ctx: Context) -> Iterator[Finding]:
    """``failover`` or ``failoverPriority`` in a traffic policy without ``outlierDetection``:
    Istio's validator warns so, and neither Envoy nor Tulle ever fails over without it (no
    endpoint is ever found unhealthy), so the endpoints are not prioritized at all."""
    for rule, item in ctx.of(DestinationRule):
        for path, policy in traffic_policies(rule):
            balancer = policy.load_balancer
            setting = balancer.locality_lb_setting if balancer is not None else None
            if setting is None or setting.enabled is False or policy.outlier_detection:
                continue
            if not (setting.failover or setting.failover_priority):
                continue
            field = "failover" if setting.failover else "failoverPriority"
            yield item.finding(
                WARNING,
                (*path, "loadBalancer", "localityLbSetting", field),
                "outlier detection policy must be provided for failover (as Istio warns): "
                f"without outlierDetection beside it, {field} has no effect",
            )


def check_zone_aware_enabled(ctx: Context) -> Iterator[Finding]:
    """``zoneAwareLbSetting`` without ``enabled: true``: Istio reads it as off (its mesh default),
    so its other fields do nothing."""
    for rule, item in ctx.of(DestinationRule):
        for path, policy in traffic_policies(rule):
            balancer = policy.load_balancer
            setting = balancer.zone_aware_lb_setting if balancer is not None else None
            if setting is None:
                continue
            if setting.enabled is True:
                if balancer is not None and balancer.consistent_hash is not None:
                    yield item.finding(
                        WARNING,
                        (*path, "loadBalancer", "zoneAwareLbSetting"),
                        "consistentHash picks by hash, not by zone: the zone shares are not "
                        "applied (the region tiers are), as in Envoy",
                    )
                continue
            said = "enabled: false" if setting.enabled is False else "without enabled: true"
            yield item.finding(
                WARNING,
                (*path, "loadBalancer", "zoneAwareLbSetting", "enabled"),
                f"zoneAwareLbSetting {said} is off: zone aware load balancing is not applied",
            )


__all__ = ["check_locality_failover", "check_zone_aware_enabled"]
