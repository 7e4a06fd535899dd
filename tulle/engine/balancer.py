"""Load balancing over a cluster's available endpoints: round robin (weighted), least request
(power of two choices), random, and ring hash (consistent hashing on a request key)."""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence
from typing import Final, Protocol

from tulle.engine.cluster_config import EndpointSpec


class Balancer(Protocol):
    """Picks one endpoint among those available; ``active`` gives in-flight requests per key."""

    def pick(
        self, endpoints: Sequence[EndpointSpec], active: dict[str, int], key: bytes | None
    ) -> EndpointSpec: ...


class RoundRobin:
    """Weighted round robin (smooth: weights spread, not bursts)."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def pick(
        self, endpoints: Sequence[EndpointSpec], active: dict[str, int], key: bytes | None
    ) -> EndpointSpec:
        if len(endpoints) == 1:
            return endpoints[0]
        total = 0
        best: EndpointSpec | None = None
        best_score = 0.0
        for endpoint in endpoints:
            score = self._current.get(endpoint.key, 0.0) + endpoint.weight
            self._current[endpoint.key] = score
            total += endpoint.weight
            if best is None or score > best_score:
                best, best_score = endpoint, score
        assert best is not None
        self._current[best.key] -= total
        return best


class LeastRequest:
    """Power of two choices: of two random endpoints, the one with fewer requests in flight."""

    def __init__(self, chance: random.Random) -> None:
        self.chance = chance

    def pick(
        self, endpoints: Sequence[EndpointSpec], active: dict[str, int], key: bytes | None
    ) -> EndpointSpec:
        if len(endpoints) == 1:
            return endpoints[0]
        first, second = self.chance.sample(list(endpoints), 2)
        return first if active.get(first.key, 0) <= active.get(second.key, 0) else second


class RandomPick:
    """Uniformly random (weighted)."""

    def __init__(self, chance: random.Random) -> None:
        self.chance = chance

    def pick(
        self, endpoints: Sequence[EndpointSpec], active: dict[str, int], key: bytes | None
    ) -> EndpointSpec:
        return self.chance.choices(list(endpoints), weights=[e.weight for e in endpoints])[0]


RING_CACHE: Final = 4


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class RingHash:
    """Consistent hashing: each endpoint owns points on a ring (in proportion to its weight);
    a request's key goes to the next point. Without a key it picks at random."""

    def __init__(self, ring_size: int, chance: random.Random) -> None:
        self.ring_size = ring_size
        self.chance = chance
        # A ring per set of members: with priorities (failover) two sets may take turns.
        self._rings: dict[tuple[str, ...], tuple[tuple[int, ...], tuple[EndpointSpec, ...]]] = {}

    def _build(
        self, endpoints: Sequence[EndpointSpec]
    ) -> tuple[tuple[int, ...], tuple[EndpointSpec, ...]]:
        total = sum(e.weight for e in endpoints)
        points: list[tuple[int, EndpointSpec]] = []
        for endpoint in endpoints:
            share = max(1, round(self.ring_size * endpoint.weight / total))
            points.extend((_point(f"{endpoint.key}_{i}".encode()), endpoint) for i in range(share))
        points.sort(key=lambda p: p[0])
        return tuple(p for p, _ in points), tuple(e for _, e in points)

    def pick(
        self, endpoints: Sequence[EndpointSpec], active: dict[str, int], key: bytes | None
    ) -> EndpointSpec:
        if key is None:
            return self.chance.choice(list(endpoints))
        members = tuple(sorted(e.key for e in endpoints))
        ring = self._rings.get(members)
        if ring is None:
            if len(self._rings) >= RING_CACHE:
                self._rings.clear()
            ring = self._rings[members] = self._build(endpoints)
        hashes, owners = ring
        index = bisect.bisect_left(hashes, _point(key)) % len(hashes)
        return owners[index]


def make_balancer(policy: str, ring_size: int, chance: random.Random) -> Balancer:
    """The balancer for an lb policy name."""
    if policy == "LEAST_REQUEST":
        return LeastRequest(chance)
    if policy == "RANDOM":
        return RandomPick(chance)
    if policy == "RING_HASH":
        return RingHash(ring_size, chance)
    return RoundRobin()
