"""Locality load balancing for one caller, as Istio computes it per proxy
(``pilot/pkg/networking/core/loadbalancer``): a cluster's endpoints grouped by locality, each
group with the EDS ``priority`` and locality weight the caller's locality, labels and the
DestinationRule's ``localityLbSetting`` give.

- ``distribute``: the first rule whose ``from`` matches the caller's locality sets the weight of
  each locality its ``to`` matches (its share, split over the matched localities by their own
  weights, rounded up); localities no ``to`` matches get no traffic (they are left out).
- otherwise, only with outlier detection (without it no endpoint is ever found unhealthy, and
  Istio prioritizes nothing): ``failoverPriority`` splits the groups by how many of the labels
  agree with the caller's, in order; then (by default, or after ``failoverPriority`` when
  ``failover`` is given too) the locality order: same subzone 0, same zone 1, same region 2,
  another region 3, or 4 when a ``failover`` rule from the caller's region names another
  region. Priorities are then renumbered 0, 1, 2... without gaps, as Envoy and grpcio need.

Locality load balancing is on unless the rule says ``enabled: false`` (Istio's mesh default).
Without a rule, a Kubernetes Service's ``trafficDistribution`` (Istio 1.24+) stands for one:
``failoverPriority`` on the network, region and zone labels (``PreferClose``,
``PreferSameZone``; ``PreferSameNode`` adds the node's ``kubernetes.io/hostname``), applied
with or without outlier detection (:func:`service_policy`); without either, the Mesh's
``localityLbSetting`` (Istio's ``meshConfig.localityLbSetting``).
The caller's and the endpoints' labels include the topology labels of their localities
(``topology.kubernetes.io/region``, ``.../zone``, ``topology.istio.io/subzone``), as Istio adds
them, so ``failoverPriority`` can name them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from tulle.api.kinds.base import UINT32_MAX
from tulle.api.kinds.destination_locality import REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL
from tulle.api.model_locality import LocalityLbPolicy

DEFAULT_POLICY = LocalityLbPolicy()
"""Istio's mesh default: locality load balancing on, no rules."""


def split_locality(locality: str) -> tuple[str, str, str]:
    """``region/zone/subzone`` as three parts ("" for those not given)."""
    region, _, rest = locality.partition("/")
    zone, _, subzone = rest.partition("/")
    return region, zone, subzone


def with_topology(labels: Mapping[str, str], locality: str) -> dict[str, str]:
    """``labels`` with the topology labels of ``locality`` (those not already set)."""
    result = dict(labels)
    for name, part in zip(
        (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL), split_locality(locality), strict=True
    ):
        if part:
            result.setdefault(name, part)
    return result


def locality_matches(locality: str, pattern: str) -> bool:
    """Whether ``locality`` is one that ``pattern`` names: a region ``*`` matches any; a zone
    or subzone ``*`` or left out matches any (Istio's ``LocalityMatch``)."""
    region, zone, subzone = split_locality(locality)
    want_region, want_zone, want_subzone = split_locality(pattern)
    return (
        want_region in ("*", region)
        and want_zone in ("*", "", zone)
        and want_subzone in ("*", "", subzone)
    )


def locality_rank(caller: str, endpoint: str) -> int:
    """0 same subzone, 1 same zone, 2 same region, 3 another region (Istio's ``LbPriority``)."""
    mine, theirs = split_locality(caller), split_locality(endpoint)
    if mine[0] != theirs[0]:
        return 3
    if mine[1] != theirs[1]:
        return 2
    return 0 if mine[2] == theirs[2] else 1


@dataclass(frozen=True)
class Member:
    """An endpoint as locality load balancing sees it (``item``: what it stands for)."""

    item: object
    locality: str
    labels: Mapping[str, str]
    weight: int


@dataclass(frozen=True)
class Group:
    """The endpoints of one locality at one priority, and the locality's weight."""

    locality: str
    priority: int
    weight: int
    members: tuple[Member, ...]


def _weight(members: Iterable[Member]) -> int:
    return min(sum(m.weight for m in members), UINT32_MAX)


def by_locality(members: Iterable[Member]) -> list[Group]:
    """One group per locality (sorted), priority 0, weighted by its endpoints' weights."""
    found: dict[str, list[Member]] = {}
    for member in members:
        found.setdefault(member.locality, []).append(member)
    return [
        Group(locality, 0, _weight(grouped), tuple(grouped))
        for locality, grouped in sorted(found.items())
    ]


def renumbered(groups: list[Group]) -> list[Group]:
    """The same groups with their priorities made 0, 1, 2... in the same order."""
    order = {p: i for i, p in enumerate(sorted({g.priority for g in groups}))}
    return [replace(g, priority=order[g.priority]) for g in groups]


def _distributed(
    groups: list[Group], caller: str, rules: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]
) -> list[Group]:
    rule = next((shares for origin, shares in rules if locality_matches(caller, origin)), None)
    if rule is None:
        return groups
    weights: dict[int, int] = {}
    for pattern, share in rule:
        matched = [
            i
            for i, g in enumerate(groups)
            if i not in weights and locality_matches(g.locality, pattern)
        ]
        total = sum(groups[i].weight for i in matched)
        for i in matched:
            weights[i] = math.ceil(groups[i].weight * share / total) if total else 0
    return [
        replace(g, weight=min(weights[i], UINT32_MAX))
        for i, g in enumerate(groups)
        if weights.get(i)
    ]


def by_labels(
    groups: list[Group], caller_labels: Mapping[str, str], priorities: tuple[str, ...]
) -> list[Group]:
    """Each group split by how many of the ``priorities`` labels (``name`` or ``name=value``)
    agree with the caller's, in order: all agree 0; the first that differs is label j: n - j."""
    wanted = [entry.partition("=") for entry in priorities]
    lowest = len(wanted)
    result: list[Group] = []
    for group in groups:
        split: dict[int, list[Member]] = {}
        for member in group.members:
            rank = 0
            for j, (name, forced, value) in enumerate(wanted):
                mine = value if forced else caller_labels.get(name, "")
                if member.labels.get(name, "") != mine:
                    rank = lowest - j
                    break
            split.setdefault(rank, []).append(member)
        result.extend(
            Group(group.locality, rank, _weight(members), tuple(members))
            for rank, members in sorted(split.items())
        )
    return result


def _failed_over(
    groups: list[Group], caller: str, failover: tuple[tuple[str, str], ...]
) -> list[Group]:
    region = split_locality(caller)[0]
    result = []
    for group in groups:
        rank = locality_rank(caller, group.locality)
        if rank == 3:
            target = next((to for origin, to in failover if origin == region), None)
            if target is not None and split_locality(group.locality)[0] != target:
                rank = 4
        result.append(replace(group, priority=group.priority * 5 + rank))
    return result


NETWORK_LABEL: Final = "topology.istio.io/network"
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
# Istio 1.27+ (istio/istio#55848): the subzone is not among them.
_PREFER_SAME_ZONE: Final = LocalityLbPolicy(
    failover_priority=(NETWORK_LABEL, REGION_LABEL, ZONE_LABEL)
)
TRAFFIC_DISTRIBUTION_POLICIES: Final = {
    "PreferClose": _PREFER_SAME_ZONE,
    "PreferSameZone": _PREFER_SAME_ZONE,
    "PreferSameNode": LocalityLbPolicy(
        failover_priority=(*_PREFER_SAME_ZONE.failover_priority, HOSTNAME_LABEL)
    ),
}
"""The policy a Service's ``trafficDistribution`` stands for (Istio's
``GetLocalityLbSetting``)."""


def service_policy(
    policy: LocalityLbPolicy | None,
    traffic_distribution: str,
    mesh: LocalityLbPolicy | None = None,
) -> tuple[LocalityLbPolicy | None, bool]:
    """The locality policy that applies, and whether it fails over without outlier detection,
    in Istio's order: the DestinationRule's when it sets one, else the Service's
    ``trafficDistribution``'s (forced, as Istio applies it), else the Mesh's
    ``localityLbSetting``, else None (Istio's default)."""
    if policy is not None:
        return policy, False
    if traffic_distribution in TRAFFIC_DISTRIBUTION_POLICIES:
        return TRAFFIC_DISTRIBUTION_POLICIES[traffic_distribution], True
    return mesh, False


def locality_groups(
    members: Iterable[Member],
    caller_locality: str,
    caller_labels: Mapping[str, str],
    policy: LocalityLbPolicy | None,
    outlier_detection: bool,
) -> list[Group]:
    """The groups of ``members`` for a caller at ``caller_locality`` with ``caller_labels``,
    under ``policy`` (None: the DestinationRule sets none, Istio's mesh default applies)."""
    groups = by_locality(members)
    chosen = policy or DEFAULT_POLICY
    if not chosen.enabled:
        return groups
    if chosen.distribute:
        return _distributed(groups, caller_locality, chosen.distribute)
    if not outlier_detection:
        return groups
    if chosen.failover_priority:
        labels = with_topology(caller_labels, caller_locality)
        if labels:
            groups = renumbered(by_labels(groups, labels, chosen.failover_priority))
        if not chosen.failover:
            return groups
    return renumbered(_failed_over(groups, caller_locality, chosen.failover))


def locality_weighted(policy: LocalityLbPolicy | None, outlier_detection: bool) -> bool:
    """Whether a cluster balances by locality weight within a priority (Envoy's
    ``locality_weighted_lb_config``), as Istio sets it: with ``distribute``, or with outlier
    detection and ``failover`` or ``failoverPriority``."""
    if policy is None or not policy.enabled:
        return False
    failover = bool(policy.failover or policy.failover_priority)
    return bool(policy.distribute) or (outlier_detection and failover)
