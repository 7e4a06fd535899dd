"""Slow start (DestinationRule ``warmup``) in a cluster's balancing: an endpoint that joins gets
a share that ramps up over the window as Envoy's formula says; the endpoints the cluster starts
with are warm; ramped weights are computed at most every REFRESH seconds, not per request."""

from __future__ import annotations

import collections
import random

import pytest

from tulle.engine.cluster import ClusterState
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.connection_options import SlowStartSpec
from tulle.engine.slow_start import REFRESH, ramp_factor

OLD = (EndpointSpec("10.0.0.1", 80), EndpointSpec("10.0.0.2", 80))
NEW = EndpointSpec("10.0.0.3", 80)
WINDOW = SlowStartSpec(window=100.0, aggression=1.0, min_percent=10.0)


def shares(state: ClusterState, now: float, picks: int) -> dict[str, float]:
    counts = collections.Counter(state.pick(None, now).key for _ in range(picks))  # type: ignore[union-attr]
    return {key: count / picks for key, count in counts.items()}


@pytest.mark.parametrize(
    ("age", "factor"),
    [(0.0, 0.1), (5.0, 0.1), (50.0, 0.5), (99.0, 0.99), (150.0, 1.0)],
)
def test_envoys_formula(age, factor):
    assert ramp_factor(WINDOW, age) == pytest.approx(factor)
    # aggression 2 ramps faster: (age / window) ^ (1/2)
    assert ramp_factor(SlowStartSpec(100.0, 2.0, 10.0), 25.0) == pytest.approx(0.5)


@pytest.mark.parametrize("lb", ["ROUND_ROBIN", "LEAST_REQUEST"])
def test_a_joining_endpoint_ramps_up_over_the_window(lb):
    spec = ClusterSpec("web", lb=lb, slow_start=WINDOW)
    state = ClusterState(spec, OLD, random.Random(7), now=0.0)
    assert state.slow_start is not None
    assert not state.slow_start.ramping(0.0)  # the endpoints it starts with are warm
    state.update(spec, (*OLD, NEW), now=10.0)
    # Just joined: 10% of its weight, so 0.1 / 2.1 of the requests (4.8%).
    early = shares(state, 10.0, 4200).get(NEW.key, 0.0)
    # Halfway: 0.5 / 2.5 (20%).
    halfway = shares(state, 60.0, 4200)[NEW.key]
    # After the window: its full share, a third.
    warm = shares(state, 111.0, 4200)[NEW.key]
    if lb == "ROUND_ROBIN":  # deterministic
        assert (round(early, 3), round(halfway, 3), round(warm, 3)) == (0.048, 0.2, 0.333)
    else:  # drawn: within 4.5 standard deviations (4,200 draws)
        assert abs(early - 0.048) < 0.015
        assert abs(halfway - 0.2) < 0.028
        assert abs(warm - 1 / 3) < 0.033
    assert not state.slow_start.ramping(111.0)


def test_weights_are_computed_at_most_every_refresh_and_when_endpoints_change():
    spec = ClusterSpec("web", lb="ROUND_ROBIN", slow_start=WINDOW)
    state = ClusterState(spec, OLD, random.Random(1), now=0.0)
    state.update(spec, (*OLD, NEW), now=0.0)
    warming = state.slow_start
    assert warming is not None
    first = warming.ramped
    state.pick(None, REFRESH / 2)
    assert warming.ramped is first  # not recomputed within REFRESH
    state.pick(None, REFRESH * 4)
    assert warming.ramped is not first
    again = warming.ramped
    state.update(spec, OLD, now=REFRESH * 4)  # it left: no endpoint ramps any more
    assert warming.ramped is not again
    assert not warming.ramping(REFRESH * 4)


def test_an_endpoint_healthy_again_ramps_and_new_config_starts_warm():
    sick = EndpointSpec("10.0.0.3", 80, healthy=False)
    spec = ClusterSpec("web", lb="ROUND_ROBIN", slow_start=WINDOW)
    state = ClusterState(spec, (*OLD, sick), random.Random(1), now=0.0)
    state.update(spec, (*OLD, NEW), now=5.0)  # healthy now: it joins
    assert state.slow_start is not None
    assert state.slow_start.ramping(5.0)
    # Slow start newly configured: every endpoint there is warm (Envoy builds a new balancer).
    longer = ClusterSpec("web", lb="ROUND_ROBIN", slow_start=SlowStartSpec(200.0))
    state.update(longer, (*OLD, NEW), now=6.0)
    assert not state.slow_start.ramping(6.0)
    state.update(ClusterSpec("web", lb="ROUND_ROBIN"), (*OLD, NEW), now=7.0)
    assert state.slow_start is None


def test_the_first_endpoints_of_a_cluster_that_had_none_start_warm():
    # A sidecar gets a cluster (CDS) before its endpoints (EDS): those are its first, warm.
    spec = ClusterSpec("web", lb="ROUND_ROBIN", slow_start=WINDOW)
    state = ClusterState(spec, (), random.Random(1), now=0.0)
    state.update(spec, OLD, now=1.0)
    assert state.slow_start is not None
    assert not state.slow_start.ramping(1.0)
    state.update(spec, (*OLD, NEW), now=2.0)
    assert state.slow_start.ramping(2.0)
