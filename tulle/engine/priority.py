"""Priority levels and locality weights, as Envoy balances them: a cluster's endpoints come in
priorities (EDS ``priority``, 0 first) and localities (each with a weight). Each priority gets
the share of requests its health earns, from the first down:

- a priority's health is its available endpoints (healthy in EDS, not ejected by outlier
  detection) over its endpoints, times the overprovisioning factor 1.4, at most 100%: a priority
  with 5 of 7 endpoints available (71% x 1.4 = 100%) still takes every request;
- priority 0 takes its health's share, the next one what is left up to its own health, and so
  on; when the healths add up to less than 100% they are scaled up to 100%;
- panic (Envoy's ``healthy_panic_threshold``, Istio's ``minHealthPercent``; 0 turns it off):
  when the healths add up to less than 100%, a priority with fewer than that percent of its
  endpoints available takes its share over all its endpoints, ejected or not; when every
  priority panics, each takes a share in proportion to its endpoints.

With locality weights (Envoy's ``locality_weighted_lb_config``), a request at a priority picks a
locality first, by weight times the locality's own health (the same 1.4 factor, at most 1),
then the balancer picks among that locality's available endpoints.

All this is decided once per change (new endpoints or config, an ejection, an ejection running
out), not per request: :func:`plan` returns a :class:`Plan` the cluster keeps until then, and a
request costs a random draw or two when several priorities or localities share the load."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Final

from tulle.engine.cluster_config import EndpointSpec

OVERPROVISIONING: Final = 1.4


class Level:
    """The endpoints of one priority (those healthy in EDS), by locality too."""

    __slots__ = ("endpoints", "localities")

    def __init__(self, endpoints: list[EndpointSpec]) -> None:
        self.endpoints = endpoints
        found: dict[str, list[EndpointSpec]] = {}
        for endpoint in endpoints:
            found.setdefault(endpoint.locality, []).append(endpoint)
        # Each locality with its weight (the EDS locality's load_balancing_weight).
        self.localities: list[tuple[int, list[EndpointSpec]]] = [
            (members[0].locality_weight, members) for _, members in sorted(found.items())
        ]


def levels_of(endpoints: Sequence[EndpointSpec]) -> list[Level]:
    """The priorities of ``endpoints`` (healthy in EDS), first first; empty ones left out."""
    found: dict[int, list[EndpointSpec]] = {}
    for endpoint in endpoints:
        found.setdefault(endpoint.priority, []).append(endpoint)
    return [Level(found[priority]) for priority in sorted(found)]


class Pool:
    """What one priority offers now: endpoints to balance over, or (locality weighted)
    localities with cumulative effective weights, each with its available endpoints."""

    __slots__ = ("endpoints", "localities", "total")

    def __init__(
        self,
        endpoints: list[EndpointSpec],
        localities: list[tuple[float, list[EndpointSpec]]] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.localities = localities
        self.total = localities[-1][0] if localities else 0.0

    def candidates(self, chance: random.Random) -> list[EndpointSpec]:
        """The endpoints to balance over for one request."""
        localities = self.localities
        if localities is None:
            return self.endpoints
        point = chance.random() * self.total
        for bound, members in localities:
            if point < bound:
                return members
        return localities[-1][1]


class Plan:
    """The share of each priority (cumulative percentages) and what each offers."""

    __slots__ = ("bounds", "pools")

    def __init__(self, bounds: list[float], pools: list[Pool]) -> None:
        self.bounds = bounds
        self.pools = pools

    def candidates(self, chance: random.Random) -> list[EndpointSpec]:
        """The endpoints one request may go to (empty: none available)."""
        pools = self.pools
        if len(pools) == 1:
            return pools[0].candidates(chance)
        point = chance.random() * 100.0
        for bound, pool in zip(self.bounds, pools, strict=True):
            if point < bound:
                return pool.candidates(chance)
        return pools[-1].candidates(chance)

    def shares(self) -> list[float]:
        """Each priority's share of the requests, in percent (for tests and the admin page)."""
        previous, result = 0.0, []
        for bound in self.bounds:
            result.append(bound - previous)
            previous = bound
        return result


NO_ENDPOINT: Final = Plan([100.0], [Pool([])])


def _health(available: int, total: int) -> float:
    return min(100.0, OVERPROVISIONING * 100.0 * available / total) if total else 0.0


def _pool(available: list[EndpointSpec], level: Level, weighted: bool, ejected: set[str]) -> Pool:
    if not weighted or len(level.localities) < 2:
        return Pool(available)
    bound, localities = 0.0, []
    for weight, members in level.localities:
        up = [e for e in members if e.key not in ejected] if ejected else members
        effective = weight * min(1.0, OVERPROVISIONING * len(up) / len(members))
        if effective > 0 and up:
            bound += effective
            localities.append((bound, up))
    return Pool(available, localities) if localities else Pool(available)


def plan(
    levels: list[Level],
    is_ejected: Callable[[str], bool] | None,
    panic_threshold: float,
    locality_weighted: bool,
) -> Plan:
    """The plan for ``levels`` given which endpoints are ejected now (``is_ejected``: None
    when the cluster has no outlier detection)."""
    if not levels:
        return NO_ENDPOINT
    ejected: set[str] = set()
    if is_ejected is not None:
        ejected = {e.key for level in levels for e in level.endpoints if is_ejected(e.key)}
    availables = [
        [e for e in level.endpoints if e.key not in ejected] if ejected else level.endpoints
        for level in levels
    ]
    healths = [
        _health(len(up), len(level.endpoints)) for up, level in zip(availables, levels, strict=True)
    ]
    total = min(100.0, sum(healths))
    panics = [
        total < 100.0 and 100.0 * len(up) < panic_threshold * len(level.endpoints)
        for up, level in zip(availables, levels, strict=True)
    ]
    if total == 0.0 and not any(panics):
        return NO_ENDPOINT  # nothing available and panic off: no endpoint at all
    if all(panics):  # every priority in panic: shares by endpoints, all of them offered
        counts = [len(level.endpoints) for level in levels]
        shares = [100.0 * count / sum(counts) for count in counts]
        return Plan(_bounds(shares), [Pool(level.endpoints) for level in levels])
    shares, left = [], 100.0
    for health in healths:
        share = min(left, health * 100.0 / total)
        shares.append(share)
        left -= share
    pools = [
        Pool(level.endpoints) if panic else _pool(up, level, locality_weighted, ejected)
        for up, level, panic in zip(availables, levels, panics, strict=True)
    ]
    if len(pools) > 1 and shares[0] >= 100.0:
        return Plan([100.0], pools[:1])  # the common case: all of it to priority 0
    return Plan(_bounds(shares), pools)


def _bounds(shares: list[float]) -> list[float]:
    bounds, running = [], 0.0
    for share in shares:
        running += share
        bounds.append(running)
    if bounds:
        bounds[-1] = max(bounds[-1], 100.0)  # rounding never leaves a gap at the top
    return bounds
