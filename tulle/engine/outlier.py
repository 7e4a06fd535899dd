"""Outlier detection: eject an endpoint after consecutive 5xx (or gateway) errors, for a time that
grows with each ejection; never eject more than ``max_ejection_percent`` (but at least one may go),
and stop ejecting when fewer than ``min_health_percent`` would remain."""

from __future__ import annotations

from dataclasses import dataclass

from tulle.engine.cluster_config import OutlierSpec

MAX_EJECTION_SECONDS = 300.0


@dataclass
class EndpointHealth:
    """What the detector knows about one endpoint."""

    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejected_until: float | None = None
    ejections: int = 0


class OutlierDetector:
    """Per-cluster outlier state, fed with every attempt's outcome."""

    def __init__(self, spec: OutlierSpec) -> None:
        self.spec = spec
        self.hosts: dict[str, EndpointHealth] = {}
        self.generation = 0  # ejections so far: a change for whoever planned around them

    def next_return(self) -> float:
        """When the first ejection in force runs out (infinity: none is in force)."""
        times = [h.ejected_until for h in self.hosts.values() if h.ejected_until is not None]
        return min(times) if times else float("inf")

    def _health(self, key: str) -> EndpointHealth:
        return self.hosts.setdefault(key, EndpointHealth())

    def is_ejected(self, key: str, now: float) -> bool:
        """Whether ``key`` is ejected now (an ejection that has run out ends here)."""
        health = self.hosts.get(key)
        if health is None or health.ejected_until is None:
            return False
        if now >= health.ejected_until:
            health.ejected_until = None
            health.consecutive_5xx = health.consecutive_gateway = 0
            return False
        return True

    def ejected_count(self, now: float) -> int:
        """How many endpoints are ejected now."""
        return sum(self.is_ejected(key, now) for key in list(self.hosts))

    def record_success(self, key: str) -> None:
        """A non-5xx response resets the counters."""
        health = self.hosts.get(key)
        if health is not None:
            health.consecutive_5xx = health.consecutive_gateway = 0

    def record_failure(self, key: str, gateway: bool, now: float, total: int) -> bool:
        """A 5xx (``gateway``: 502/503/504 or no response). True when it ejects ``key``."""
        health = self._health(key)
        health.consecutive_5xx += 1
        if gateway:
            health.consecutive_gateway += 1
        spec = self.spec
        tripped = (spec.consecutive_5xx and health.consecutive_5xx >= spec.consecutive_5xx) or (
            spec.consecutive_gateway and health.consecutive_gateway >= spec.consecutive_gateway
        )
        if not tripped or self.is_ejected(key, now):
            return False
        ejected = self.ejected_count(now)
        if ejected and (ejected + 1) * 100 > spec.max_ejection_percent * total:
            return False
        health.ejections += 1
        self.generation += 1
        health.ejected_until = now + min(
            MAX_EJECTION_SECONDS, spec.base_ejection * health.ejections
        )
        health.consecutive_5xx = health.consecutive_gateway = 0
        return True
