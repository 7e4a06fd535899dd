"""When a workload renews its certificate, and how it retries while the CA is unreachable.

Pure functions of times and a random source (the caller's clock, the caller's ``random.Random``),
so every schedule is tested without waiting. A workload renews at about half its certificate's
lifetime, with jitter so that workloads started together do not all ask the CA at once; while the
CA is unreachable the current certificate serves until it expires, and the retries back off
exponentially but never sleep past that expiry.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

RENEW_EARLIEST = 0.45  # fractions of the lifetime: renewal lands uniformly between these
RENEW_LATEST = 0.55
RENEW_NEVER_AFTER = 0.80  # a bound no jitter setting may cross


def renewal_time(not_before: datetime, not_after: datetime, rng: random.Random) -> datetime:
    """When to renew a certificate valid from ``not_before`` to ``not_after``: uniformly within
    45%-55% of its lifetime (never past 80%). ``ValueError`` for an empty or negative lifetime."""
    lifetime = not_after - not_before
    if lifetime <= timedelta(0):
        raise ValueError(f"certificate lifetime is not positive ({not_before} to {not_after})")
    fraction = min(rng.uniform(RENEW_EARLIEST, RENEW_LATEST), RENEW_NEVER_AFTER)
    return not_before + lifetime * fraction


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff for a CA that does not answer: ``first``, doubled per attempt up to
    ``cap``, with jitter from the caller's random source; never past the current certificate's
    expiry while it is valid, so the last retry happens before the workload must fail closed."""

    first: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(seconds=60)
    factor: float = 2.0
    jitter: float = 0.5  # a delay is drawn uniformly from [(1 - jitter) * d, d]

    def __post_init__(self) -> None:
        if self.first <= timedelta(0) or self.cap < self.first:
            raise ValueError(f"retry delays need 0 < first <= cap (got {self.first}, {self.cap})")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"retry factor must be >= 1, jitter in [0, 1) (got {self})")

    def delay(
        self, attempt: int, now: datetime, not_after: datetime | None, rng: random.Random
    ) -> timedelta:
        """How long to wait before retry number ``attempt`` (0 for the first) at ``now``, with a
        certificate valid until ``not_after`` (None: the workload has none yet)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, not {attempt}")
        ceiling = self.cap.total_seconds()
        seconds = min(self.first.total_seconds() * self.factor ** min(attempt, 64), ceiling)
        wait = timedelta(seconds=seconds * rng.uniform(1 - self.jitter, 1))
        if not_after is not None and now < not_after:
            wait = min(wait, not_after - now)
        return wait

    def next_attempt(
        self, attempt: int, now: datetime, not_after: datetime | None, rng: random.Random
    ) -> datetime:
        """When retry number ``attempt`` is due: ``now`` plus its ``delay``."""
        return now + self.delay(attempt, now, not_after, rng)
