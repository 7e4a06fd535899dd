"""The mesh model's locality load balancing (a DestinationRule's ``localityLbSetting``), as
:class:`~tulle.api.model_destinations.LoadBalancer` carries it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalityLbPolicy:
    """Istio's LocalityLoadBalancerSetting. ``enabled`` False turns locality load balancing off
    for the destination (Istio's mesh default is on); ``distribute``: per caller locality
    pattern, the share (percent) of each destination locality pattern, in the order written;
    ``failover``: region to region; ``failover_priority``: labels (``name`` or ``name=value``)
    whose agreement with the caller's orders the endpoints."""

    enabled: bool = True
    distribute: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    failover: tuple[tuple[str, str], ...] = ()
    failover_priority: tuple[str, ...] = ()
