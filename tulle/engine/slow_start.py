"""Slow start (Istio's ``warmup``, Envoy's ``slow_start_config``): an endpoint that joins a
cluster — added, or healthy again — gets a weight that ramps up over the window, instead of its
full share at once.

As Envoy: the endpoints a cluster starts with (its first non-empty set) are not ramped, only
those that join later;
weight x max(min_percent / 100, (max(age, 1s) / window) ^ (1 / aggression)). The ramped weights
are computed when the endpoints change and then at most every ``REFRESH`` seconds, never per
request: while an endpoint ramps, a request costs a dictionary look-up per candidate (round
robin) or a weighted draw (least request, Envoy's weight / (active + 1)); with none ramping,
one comparison."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.connection_options import SlowStartSpec

REFRESH: Final = 0.25  # seconds between two computations of the ramped weights
SCALE: Final = 1000  # weights are integers: a full weight is SCALE x the endpoint's


def ramp_factor(spec: SlowStartSpec, age: float) -> float:
    """The share of its weight an endpoint ``age`` seconds into its window gets."""
    time_factor = max(age, 1.0) / spec.window
    ramped: float = time_factor ** (1 / spec.aggression)
    return min(1.0, max(spec.min_percent / 100, ramped))


class SlowStart:
    """Which endpoints of a cluster are ramping up, and their ramped weights."""

    def __init__(self, spec: SlowStartSpec, healthy: Sequence[EndpointSpec], now: float) -> None:
        self.spec = spec
        self.known = {e.key for e in healthy}  # present at the start: not ramped
        self.joined: dict[str, float] = {}  # key -> when it joined, while it ramps
        self.ramped: dict[str, EndpointSpec] = {}  # key -> with its weight scaled, while any ramps
        self.refresh_at = math.inf
        self._healthy: Sequence[EndpointSpec] = healthy

    def endpoints_changed(self, healthy: Sequence[EndpointSpec], now: float) -> None:
        """New endpoints (or healthy ones again) start ramping now; gone ones are forgotten."""
        keys = {e.key for e in healthy}
        # After none (a cluster's first assignment: CDS comes before EDS), they start warm:
        # Envoy makes the balancer once the cluster has its first endpoints.
        for key in keys - self.known if self.known else ():
            self.joined[key] = now
        for key in [k for k in self.joined if k not in keys]:
            del self.joined[key]
        self.known, self._healthy = keys, healthy
        self._recompute(now)

    def ramping(self, now: float) -> bool:
        """Whether some endpoint is ramping up now (the weights are refreshed if due)."""
        if now >= self.refresh_at:
            self._recompute(now)
        return bool(self.ramped)

    def _recompute(self, now: float) -> None:
        window = self.spec.window
        for key in [k for k, t in self.joined.items() if now - t >= window]:
            del self.joined[key]  # warm now
        if not self.joined:
            self.ramped, self.refresh_at = {}, math.inf
            return
        ramped = {}
        for endpoint in self._healthy:
            joined = self.joined.get(endpoint.key)
            share = 1.0 if joined is None else ramp_factor(self.spec, now - joined)
            weight = max(1, round(endpoint.weight * SCALE * share))
            ramped[endpoint.key] = replace(endpoint, weight=weight)
        self.ramped, self.refresh_at = ramped, now + REFRESH

    def weighted(self, candidates: Sequence[EndpointSpec]) -> list[EndpointSpec]:
        """The candidates with their ramped weights (for a weighted round robin)."""
        ramped = self.ramped
        return [ramped.get(e.key, e) for e in candidates]

    def pick_least_request(
        self, candidates: Sequence[EndpointSpec], active: dict[str, int], chance: random.Random
    ) -> EndpointSpec:
        """Least request while weights differ (Envoy): drawn by weight / (requests in flight
        + 1)."""
        ramped = self.ramped
        weights = [
            (ramped[e.key].weight if e.key in ramped else e.weight * SCALE)
            / (active.get(e.key, 0) + 1)
            for e in candidates
        ]
        return chance.choices(candidates, weights=weights)[0]


__all__ = ["REFRESH", "SCALE", "SlowStart", "ramp_factor"]
