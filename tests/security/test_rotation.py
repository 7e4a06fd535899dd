"""The renewal schedule and the retry schedule: pure functions, checked across many seeds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tulle.security import RetrySchedule, renewal_time

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("lifetime", [timedelta(seconds=20), timedelta(hours=24)])
def test_renewal_lands_within_45_to_55_percent_of_the_lifetime(lifetime):
    end = START + lifetime
    times = [renewal_time(START, end, random.Random(seed)) for seed in range(2000)]
    assert all(START + lifetime * 0.45 <= t <= START + lifetime * 0.55 for t in times)
    assert all(t <= START + lifetime * 0.8 for t in times)
    # Jitter: the renewals of workloads started together spread over the window.
    assert min(times) < START + lifetime * 0.46
    assert max(times) > START + lifetime * 0.54
    assert len(set(times)) > 1900


def test_renewal_needs_a_positive_lifetime():
    with pytest.raises(ValueError, match="not positive"):
        renewal_time(START, START, random.Random(0))


def test_retries_back_off_exponentially_up_to_the_cap():
    schedule = RetrySchedule(jitter=0)
    rng = random.Random(1)
    delays = [schedule.delay(attempt, START, None, rng) for attempt in range(10)]
    assert [d.total_seconds() for d in delays] == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert schedule.delay(10_000, START, None, rng) == timedelta(seconds=60)


def test_retry_jitter_stays_within_half_to_full_delay():
    schedule = RetrySchedule()
    for seed in range(500):
        delay = schedule.delay(3, START, None, random.Random(seed))
        assert timedelta(seconds=4) <= delay <= timedelta(seconds=8)


def test_a_retry_never_waits_past_the_current_certificates_expiry():
    schedule = RetrySchedule(jitter=0)
    not_after = START + timedelta(seconds=5)
    assert schedule.delay(6, START, not_after, random.Random(0)) == timedelta(seconds=5)
    assert schedule.next_attempt(6, START, not_after, random.Random(0)) == not_after
    # Once expired, the workload keeps trying (capped backoff) so it recovers when the CA is back.
    after_expiry = not_after + timedelta(seconds=1)
    assert schedule.delay(6, after_expiry, not_after, random.Random(0)) == timedelta(seconds=60)


def test_retry_schedule_settings_are_checked():
    with pytest.raises(ValueError, match="0 < first <= cap"):
        RetrySchedule(first=timedelta(0))
    with pytest.raises(ValueError, match="0 < first <= cap"):
        RetrySchedule(first=timedelta(seconds=10), cap=timedelta(seconds=1))
    with pytest.raises(ValueError, match="jitter"):
        RetrySchedule(jitter=1.0)
    with pytest.raises(ValueError, match="attempt must be"):
        RetrySchedule().delay(-1, START, None, random.Random(0))
