"""Normalization of a DestinationRule's ``localityLbSetting`` into the model's
:class:`~tulle.api.model_locality.LocalityLbPolicy`."""

from __future__ import annotations

from dataclasses import replace

from tulle.api.kinds.destination_locality import LocalityLoadBalancerSetting
from tulle.api.kinds.destination_rule import LoadBalancerSettings
from tulle.api.model_destinations import LoadBalancer
from tulle.api.model_locality import LocalityLbPolicy


def locality_policy(setting: LocalityLoadBalancerSetting) -> LocalityLbPolicy:
    """The model of a ``localityLbSetting`` (``enabled`` unset: on, as Istio's mesh default)."""
    return LocalityLbPolicy(
        enabled=setting.enabled is not False,
        distribute=tuple((rule.from_, tuple(rule.to.items())) for rule in setting.distribute),
        failover=tuple((rule.from_, rule.to) for rule in setting.failover),
        failover_priority=tuple(setting.failover_priority),
    )


def with_locality(
    balancer: LoadBalancer | None, settings: LoadBalancerSettings | None
) -> LoadBalancer | None:
    """``balancer`` with the ``localityLbSetting`` of ``settings``, when it has one."""
    if balancer is None or settings is None or settings.locality_lb_setting is None:
        return balancer
    return replace(balancer, locality=locality_policy(settings.locality_lb_setting))
