"""The mesh model's locality load balancing (a DestinationRule's ``localityLbSetting`` or
``zoneAwareLbSetting``, a Kubernetes Service's ``trafficDistribution``), as
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


ZONE_AWARE_MIN_CLUSTER_SIZE = 6
"""Envoy's default ``min_cluster_size``: fewer endpoints in the caller's region, no zone routing."""


@dataclass(frozen=True)
class ZoneAwarePolicy:
    """Istio's ZoneAwareLoadBalancerSetting (enabled): Envoy's zone aware routing within the
    caller's region; ``failover`` (region to region) orders the other regions after it;
    ``failover_priority``: label tiers before regions; ``min_cluster_size``: the fewest
    endpoints of the caller's region for zone routing."""

    failover: tuple[tuple[str, str], ...] = ()
    failover_priority: tuple[str, ...] = ()
    min_cluster_size: int = ZONE_AWARE_MIN_CLUSTER_SIZE
