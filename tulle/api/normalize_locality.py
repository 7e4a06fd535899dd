"""Normalization of a DestinationRule's ``localityLbSetting`` and ``zoneAwareLbSetting`` into
the model's :class:`~tulle.api.model_locality.LocalityLbPolicy` and
:class:`~tulle.api.model_locality.ZoneAwarePolicy`."""

from __future__ import annotations

from dataclasses import replace

from tulle.api.kinds.destination_locality import (
    LocalityLoadBalancerSetting,
    ZoneAwareLoadBalancerSetting,
)
from tulle.api.kinds.destination_rule import LoadBalancerSettings
from tulle.api.model_destinations import LoadBalancer
from tulle.api.model_locality import (
    ZONE_AWARE_MIN_CLUSTER_SIZE,
    LocalityLbPolicy,
    ZoneAwarePolicy,
)


def locality_policy(setting: LocalityLoadBalancerSetting) -> LocalityLbPolicy:
    """The model of a ``localityLbSetting`` (``enabled`` unset: on, as Istio's mesh default)."""
    return LocalityLbPolicy(
        enabled=setting.enabled is not False,
        distribute=tuple((rule.from_, tuple(rule.to.items())) for rule in setting.distribute),
        failover=tuple((rule.from_, rule.to) for rule in setting.failover),
        failover_priority=tuple(setting.failover_priority),
    )


def zone_aware_policy(setting: ZoneAwareLoadBalancerSetting) -> ZoneAwarePolicy | None:
    """The model of a ``zoneAwareLbSetting``; None unless ``enabled: true`` (Istio's mesh
    default is off, and an unset BoolValue does not turn it on)."""
    if setting.enabled is not True:
        return None
    return ZoneAwarePolicy(
        failover=tuple((rule.from_, rule.to) for rule in setting.failover),
        failover_priority=tuple(setting.failover_priority),
        min_cluster_size=(
            setting.min_cluster_size
            if setting.min_cluster_size is not None
            else ZONE_AWARE_MIN_CLUSTER_SIZE
        ),
    )


def with_locality(
    balancer: LoadBalancer | None, settings: LoadBalancerSettings | None
) -> LoadBalancer | None:
    """``balancer`` with the ``localityLbSetting`` or ``zoneAwareLbSetting`` of ``settings``,
    when it has one."""
    if balancer is None or settings is None:
        return balancer
    if settings.zone_aware_lb_setting is not None:
        return replace(balancer, zone_aware=zone_aware_policy(settings.zone_aware_lb_setting))
    if settings.locality_lb_setting is None:
        return balancer
    return replace(balancer, locality=locality_policy(settings.locality_lb_setting))
