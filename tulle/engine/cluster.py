"""A cluster at run time: its endpoints, balancer, circuit-breaker counters, retry budget and
outlier detector. Survives config updates (state is kept, spec and endpoints replaced)."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from dataclasses import dataclass
from typing import Final

from tulle.engine.balancer import Balancer, make_balancer
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec, OutlierSpec
from tulle.engine.errors import MeshError, circuit_open
from tulle.engine.outlier import OutlierDetector
from tulle.engine.priority import Plan, levels_of, plan
from tulle.engine.slow_start import SlowStart

RETRY_BUDGET_PERCENT: Final = 20.0
RETRY_BUDGET_MIN: Final = 3


@dataclass
class Counters:
    """In-flight work of a cluster."""

    requests: int = 0
    pending: int = 0
    retries: int = 0
    connections: int = 0


class ClusterState:
    """Everything the engine tracks about one cluster."""

    def __init__(
        self,
        spec: ClusterSpec,
        endpoints: tuple[EndpointSpec, ...],
        chance: random.Random,
        now: float | None = None,
    ) -> None:
        """``now``: the engine's clock (slow start counts from it)."""
        self.chance = chance
        self.counters = Counters()
        self.active: dict[str, int] = {}
        self.spec = spec
        self.endpoints = endpoints
        self.healthy = [e for e in endpoints if e.healthy]
        self.levels = levels_of(self.healthy)
        self.balancer: Balancer = make_balancer(spec.lb, spec.ring_size, chance)
        self.outlier = OutlierDetector(spec.outlier or OutlierSpec(0, 0))
        self.overflows = 0
        self.ejections = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.slow_start: SlowStart | None = None  # while the spec has one (warmup)
        self._ramping = False  # whether the balancer last saw ramped weights
        self._warm(None, time.monotonic() if now is None else now)
        # Which priority and locality takes what share, kept until the endpoints, the
        # config or an ejection change it (see tulle.engine.priority).
        self._plan: Plan | None = None
        self._plan_ejections = -1
        self._plan_until = 0.0

    def update(
        self, spec: ClusterSpec, endpoints: tuple[EndpointSpec, ...], now: float | None = None
    ) -> None:
        """New config: keep counters and outlier state; rebuild the balancer if its kind changed;
        endpoints that join start their slow start (at ``now``, the engine's clock)."""
        slow_start_before = self.spec.slow_start
        if (spec.lb, spec.ring_size) != (self.spec.lb, self.spec.ring_size):
            self.balancer = make_balancer(spec.lb, spec.ring_size, self.chance)
        if spec.outlier != self.spec.outlier:
            self.outlier.spec = spec.outlier or OutlierSpec(0, 0)
        self.spec, self.endpoints = spec, endpoints
        self.healthy = [e for e in endpoints if e.healthy]
        self._warm(slow_start_before, time.monotonic() if now is None else now)
        self.levels = levels_of(self.healthy)
        self._plan = None

    def plan(self, now: float) -> Plan:
        """The current :class:`~tulle.engine.priority.Plan`: made again only after new config
        or endpoints, an ejection, or when an ejection runs out."""
        current = self._plan
        outlier = self.spec.outlier
        if outlier is None:
            if current is None:
                current = self._plan = plan(self.levels, None, 0.0, self.spec.locality_weighted)
            return current
        detector = self.outlier
        if (
            current is None
            or detector.generation != self._plan_ejections
            or now >= self._plan_until
        ):
            current = self._plan = plan(
                self.levels,
                lambda key: detector.is_ejected(key, now),
                outlier.min_health_percent,
                self.spec.locality_weighted,
            )
            self._plan_ejections = detector.generation
            self._plan_until = detector.next_return()
        return current

    def available(self, now: float) -> list[EndpointSpec]:
        """The endpoints the next request may go to: of the priority and locality it draws,
        those healthy and not ejected (all of them when that priority is in panic)."""
        return self.plan(now).candidates(self.chance)

    def admit_request(self) -> MeshError | None:
        """A request may start unless ``max_requests`` are in flight."""
        limit = self.spec.limits.max_requests
        if limit is not None and self.counters.requests >= limit:
            self.overflows += 1
            return circuit_open(self.spec.name, "max requests", limit)
        return None

    def admit_pending(self) -> MeshError | None:
        """A request may wait for a connection unless ``max_pending`` already wait."""
        limit = self.spec.limits.max_pending
        if limit is not None and self.counters.pending >= limit:
            self.overflows += 1
            return circuit_open(self.spec.name, "max pending requests", limit)
        return None

    def take_free_connection(self) -> bool:
        """A connection slot, if one is free now (fewer than ``max_connections`` in use)."""
        limit = self.spec.limits.max_connections
        if limit is None or self.counters.connections < limit:
            self.counters.connections += 1
            return True
        return False

    async def acquire_connection(self) -> MeshError | None:
        """A connection slot for one attempt: with ``max_connections`` busy the attempt waits as
        a pending request, unless ``max_pending`` already wait (then: overflow)."""
        if self.take_free_connection():
            return None
        refused = self.admit_pending()
        if refused is not None:
            return refused
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.counters.pending += 1
        try:
            await waiter  # a released slot is handed over: ``connections`` stays as it is
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release_connection()  # handed a slot, but gone: pass it on
            raise
        finally:
            self.counters.pending -= 1
        return None

    def release_connection(self) -> None:
        """Give an attempt's slot to the longest-waiting request, or free it."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.counters.connections -= 1

    def admit_retry(self) -> bool:
        """A retry may start within ``max_retries`` and the retry budget (20% of the requests in
        flight, at least 3), so retries cannot multiply an outage."""
        limit = self.spec.limits.max_retries
        if limit is not None and self.counters.retries >= limit:
            self.overflows += 1
            return False
        budget = max(RETRY_BUDGET_MIN, self.counters.requests * RETRY_BUDGET_PERCENT / 100)
        return self.counters.retries < budget

    def pick(
        self, key: bytes | None, now: float, tried: frozenset[str] = frozenset()
    ) -> EndpointSpec | None:
        """An endpoint for the next attempt, or None when none is available. A retry avoids the
        endpoints already ``tried`` while others are available (Istio's previous-hosts rule)."""
        candidates = self.available(now)
        if not candidates:
            return None
        if tried:
            fresh = [e for e in candidates if e.key not in tried]
            candidates = fresh or candidates
        warming = self.slow_start
        if warming is not None and self._warming(warming, now):
            if self.spec.lb == "LEAST_REQUEST":
                return warming.pick_least_request(candidates, self.active, self.chance)
            candidates = warming.weighted(candidates)
        return self.balancer.pick(candidates, self.active, key)

    def _warm(self, before: object, now: float) -> None:
        """Slow start after new config: the endpoints there at its start are warm; with the
        same slow start as ``before``, endpoints that joined start ramping."""
        spec = self.spec.slow_start
        if spec is None:
            self.slow_start = None
        elif self.slow_start is None or spec != before:
            self.slow_start = SlowStart(spec, self.healthy, now)
        else:
            self.slow_start.endpoints_changed(self.healthy, now)

    def _warming(self, warming: SlowStart, now: float) -> bool:
        """Whether weights are ramped now; when that changes, so does their scale, and the
        round robin starts afresh."""
        ramping = warming.ramping(now)
        if ramping != self._ramping:
            self._ramping = ramping
            self.balancer = make_balancer(self.spec.lb, self.spec.ring_size, self.chance)
        return ramping

    def record(self, endpoint: EndpointSpec, status: int | None, now: float) -> None:
        """Feed outlier detection: ``status`` of the answer, None when there was none."""
        if self.spec.outlier is None:
            return
        if status is not None and status < 500:
            self.outlier.record_success(endpoint.key)
            return
        gateway = status is None or status in (502, 503, 504)
        if self.outlier.record_failure(endpoint.key, gateway, now, len(self.endpoints)):
            self.ejections += 1
