"""Zone aware load balancing for one caller (a DestinationRule's ``zoneAwareLbSetting``), as
Envoy's zone aware routing decides it (``ZoneAwareLoadBalancerBase`` in Envoy's
``load_balancer_impl.cc``; the "Zone aware routing" architecture page), computed here in the
control plane, which knows the endpoints of both the caller's own service (Envoy's "local
cluster") and the upstream, and sent as EDS priorities and locality weights:

- priorities, as Istio's ZoneAwareLoadBalancerSetting orders them: ``failoverPriority`` label
  tiers first (as ``localityLbSetting``'s), then within each tier the caller's region, then the
  ``failover`` region of the caller's region, then the other regions;
- within priority 0, the locality weights Envoy's zone routing reaches. With ``L`` the share of
  the caller's service's healthy endpoints in the caller's locality and ``U`` the upstream's
  (of its priority 0): when ``U >= L`` every call stays in the caller's locality ("direct");
  otherwise ``U / L`` of the calls stay and the rest spill to the other localities in proportion
  to their residual capacity, ``max(0, U_i - L_i)`` ("residual").
- zone routing is skipped (the localities weighted by their endpoints, as plain balancing
  spreads calls) when priority 0 has one locality only, fewer healthy endpoints than
  ``minClusterSize``, no healthy endpoint in the caller's locality, or the caller's service has
  no healthy endpoint (Envoy has no local cluster then).

Envoy needs a weight of at least 1 for every locality: one that Envoy's routing gives nothing
gets 1 in :data:`SCALE` (a millionth of the calls)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from fractions import Fraction
from typing import Final

from tulle.api.model_locality import ZoneAwarePolicy
from tulle.control.translate.locality import (
    Group,
    Member,
    by_labels,
    by_locality,
    renumbered,
    split_locality,
    with_topology,
)

SCALE: Final = 1_000_000
"""The locality weights of priority 0 add up to about this (each at least 1)."""


def zone_shares(
    local: Mapping[str, int], upstream: Mapping[str, int], caller: str
) -> dict[str, Fraction] | None:
    """The share of calls each upstream locality gets from a caller at locality ``caller``,
    given the healthy endpoints per locality of the caller's own service (``local``) and of the
    upstream (``upstream``); None when Envoy would not route by zone (no healthy upstream
    endpoint in the caller's locality, or none at all in the caller's service)."""
    total_local, total_upstream = sum(local.values()), sum(upstream.values())
    if total_local <= 0 or upstream.get(caller, 0) <= 0:
        return None

    def local_share(locality: str) -> Fraction:
        return Fraction(local.get(locality, 0), total_local)

    def upstream_share(locality: str) -> Fraction:
        return Fraction(upstream.get(locality, 0), total_upstream)

    mine, theirs = local_share(caller), upstream_share(caller)
    if theirs >= mine:  # direct: the caller's locality takes all it sends
        return {locality: Fraction(int(locality == caller)) for locality in upstream}
    stay = theirs / mine
    residual = {
        locality: max(Fraction(0), upstream_share(locality) - local_share(locality))
        for locality in upstream
        if locality != caller
    }
    spare = sum(residual.values(), Fraction(0))  # > 0: the shares add up to 1 on both sides
    shares = {locality: (1 - stay) * capacity / spare for locality, capacity in residual.items()}
    shares[caller] = stay
    return shares


def _region_rank(caller: str, locality: str, failover: tuple[tuple[str, str], ...]) -> int:
    """0 the caller's region, 1 its ``failover`` region, 2 another (1 when none is named)."""
    mine, theirs = split_locality(caller)[0], split_locality(locality)[0]
    if mine == theirs:
        return 0
    target = next((to for origin, to in failover if origin == mine), None)
    return 1 if target is None or target == theirs else 2


def zone_aware_groups(
    members: Iterable[Member],
    caller_locality: str,
    caller_labels: Mapping[str, str],
    policy: ZoneAwarePolicy,
    local: Mapping[str, int],
    healthy: Callable[[Member], bool],
) -> list[Group]:
    """The groups of ``members`` for a caller at ``caller_locality`` whose own service has
    ``local`` healthy endpoints per locality, under ``policy``; ``healthy``: whether a member
    counts (healthy in the registry)."""
    groups = by_locality(members)
    if policy.failover_priority:
        labels = with_topology(caller_labels, caller_locality)
        if labels:
            groups = by_labels(groups, labels, policy.failover_priority)
    groups = renumbered(
        [
            replace(
                g,
                priority=g.priority * 3
                + _region_rank(caller_locality, g.locality, policy.failover),
            )
            for g in groups
        ]
    )
    first = [g for g in groups if g.priority == 0]
    counts = {g.locality: sum(1 for m in g.members if healthy(m)) for g in first}
    if len(first) < 2 or sum(counts.values()) < policy.min_cluster_size:
        return groups
    shares = zone_shares(local, counts, caller_locality)
    if shares is None:
        return groups
    return [
        replace(g, weight=max(1, round(SCALE * shares[g.locality]))) if g.priority == 0 else g
        for g in groups
    ]
