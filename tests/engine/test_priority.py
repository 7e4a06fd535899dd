"""Priorities and locality weights in the engine (Envoy's priority load with overprovisioning
factor 1.4, panic threshold, locality weighted balancing), in process: the plan itself, a
cluster's picks as ejections come and go, and the whole path from a DestinationRule with
``localityLbSetting`` through translation for a caller in region1/zone1."""

from __future__ import annotations

import collections
import random

import pytest

from tests.engine.conftest import Clock, Upstreams, handle, request, run, status
from tests.engine.outbound_config import TABLE
from tulle.api import validate_text
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.cluster import ClusterState
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec, OutlierSpec
from tulle.engine.compile import compile_resources
from tulle.engine.outbound import Engine
from tulle.engine.priority import levels_of, plan

EJECT_ON_FIRST = OutlierSpec(consecutive_5xx=1, base_ejection=30.0, max_ejection_percent=100)


def endpoints(
    *priorities: int, locality: str = "", weight: int = 1, first: int = 0
) -> list[EndpointSpec]:
    """One endpoint per entry, at that priority (10.0.<priority>.<first + n>)."""
    return [
        EndpointSpec(f"10.0.{p}.{first + i}", 80, priority=p, locality=locality,
                     locality_weight=weight)
        for i, p in enumerate(priorities)
    ]  # fmt: skip


def shares(
    found: list[EndpointSpec], down: frozenset[str] | set[str] = frozenset(), panic: float = 0.0
) -> list[float]:
    return plan(levels_of(found), lambda key: key in down, panic, False).shares()


def key(endpoint: EndpointSpec | None) -> str:
    assert endpoint is not None
    return endpoint.key


def where(endpoint: EndpointSpec | None) -> str:
    assert endpoint is not None
    return endpoint.locality


def test_priority_0_takes_everything_while_its_health_times_1_4_reaches_100():
    seven = endpoints(0, 0, 0, 0, 0, 0, 0, 1)
    assert shares(seven) == [100.0]
    # 5 of 7 available: 71.4% x 1.4 = 100%: still all of it.
    assert shares(seven, {"10.0.0.0:80", "10.0.0.1:80"}) == [100.0]
    # 4 of 7: 57.1% x 1.4 = 80%; priority 1 (healthy) takes the other 20%.
    split = shares(seven, {"10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"})
    assert [round(s, 6) for s in split] == [80.0, 20.0]
    # all of priority 0 ejected: priority 1 takes it all.
    assert shares(seven, {f"10.0.0.{i}:80" for i in range(7)}) == [0.0, 100.0]


def test_healths_short_of_100_are_scaled_up_and_the_panic_threshold_applies():
    two = endpoints(0, 0, 1, 1)
    down = {"10.0.0.0:80", "10.0.1.2:80"}  # half of each: 70% + 70% > 100%
    assert [round(s, 6) for s in shares(two, down)] == [70.0, 30.0]
    three_down = {"10.0.0.0:80", "10.0.0.1:80", "10.0.1.2:80"}  # 0% + 70%: scaled to 100%
    assert shares(two, three_down) == [0.0, 100.0]
    everything = {e.key for e in two}
    no_panic = plan(levels_of(two), lambda key: key in everything, 0.0, False)
    assert no_panic.candidates(random.Random(1)) == []
    # With a panic threshold every priority below it panics: shares by size, all endpoints.
    panicking = plan(levels_of(two), lambda key: key in everything, 50.0, False)
    assert panicking.shares() == [50.0, 50.0]
    assert {e.key for e in panicking.candidates(random.Random(1))} <= everything


def test_a_cluster_fails_over_priority_by_priority_as_endpoints_are_ejected():
    spec = ClusterSpec("web", lb="ROUND_ROBIN", outlier=EJECT_ON_FIRST)
    local, failover, rest = endpoints(0, 1, 2)
    state = ClusterState(spec, (local, failover, rest), random.Random(3))
    now = 1000.0
    assert {key(state.pick(None, now)) for _ in range(20)} == {local.key}
    first = state.plan(now)
    assert state.plan(now + 1) is first  # kept: nothing changed
    state.record(local, 503, now)
    assert {key(state.pick(None, now)) for _ in range(20)} == {failover.key}
    state.record(failover, None, now)  # no answer at all: a gateway failure
    assert {key(state.pick(None, now)) for _ in range(20)} == {rest.key}
    # The first ejection runs out after 30 s: the local endpoint takes everything again.
    assert {key(state.pick(None, now + 31)) for _ in range(20)} == {local.key}


def test_ejections_ignored_below_the_panic_threshold_of_one_priority():
    spec = ClusterSpec("web", outlier=OutlierSpec(1, 0, 10.0, 30.0, 100, 50.0))
    found = tuple(endpoints(0, 0))
    state = ClusterState(spec, found, random.Random(3))
    state.record(found[0], 500, 1000.0)
    assert {key(state.pick(None, 1000.0)) for _ in range(10)} == {found[1].key}  # 50%: not below
    state.record(found[1], 500, 1000.0)
    assert {key(state.pick(None, 1000.0)) for _ in range(40)} == {e.key for e in found}  # panic


def test_locality_weights_share_a_priority():
    spec = ClusterSpec("web", lb="ROUND_ROBIN", locality_weighted=True)
    found = endpoints(0, 0, locality="region1/zone1", weight=80) + endpoints(
        0, locality="region1/zone2", weight=20, first=2
    )
    state = ClusterState(spec, tuple(found), random.Random(5))
    counts = collections.Counter(where(state.pick(None, 0.0)) for _ in range(2000))
    # 80% of 2,000 is 1,600, sd sqrt(2000 x 0.8 x 0.2) = 17.9: +-90 is 5 sd.
    assert 1510 <= counts["region1/zone1"] <= 1690
    unweighted = ClusterState(ClusterSpec("web", lb="ROUND_ROBIN"), tuple(found), random.Random(5))
    counts = collections.Counter(where(unweighted.pick(None, 0.0)) for _ in range(300))
    assert counts["region1/zone2"] == 100  # round robin over the three endpoints alone


CONFIG = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: helloworld}
spec:
  command: [hello]
  ports: [{name: http, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: helloworld}
spec:
  hosts: [helloworld]
  http: [{route: [{destination: {host: helloworld}}], retries: {attempts: 0}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld}
spec:
  host: helloworld
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover: [{from: region1, to: region2}]
    # The task's, with maxEjectionPercent 100: at Envoy's default of 10%, only one of the
    # four endpoints could be ejected at a time (the cap counts the whole cluster).
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m,
                       maxEjectionPercent: 100}
"""
HOST = "helloworld.default.svc.cluster.local"
BACKENDS = {"10.1.1.1": "region1/zone1", "10.1.1.2": "region1/zone2",
            "10.2.3.1": "region2/zone3", "10.3.4.1": "region3/zone4"}  # fmt: skip


@pytest.mark.parametrize("engine_path", ["coroutines", "callbacks"], indirect=True)
def test_the_locality_failover_task_through_translation(engine_path):
    result = validate_text(CONFIG)
    assert result.model is not None, [f.format() for f in result.findings]
    registered = tuple(
        Endpoint(HOST, address, 5000, 5000, "HTTP", locality=locality)
        for address, locality in BACKENDS.items()
    )
    view = NodeView("sidecar", "default", locality="region1/zone1")
    config = compile_resources("1", translate(build_snapshot(1, result.model, registered), view))
    upstreams = Upstreams()
    clock = Clock()
    start = upstreams.start if engine_path == "callbacks" else None
    engine = Engine(upstreams.send, clock, random.Random(7), start)
    engine.update(config)

    async def served(count: int) -> collections.Counter[str | int]:
        outcomes = [
            await handle(engine, TABLE, request(authority="helloworld:5000")) for _ in range(count)
        ]
        return collections.Counter(
            BACKENDS[r.upstream.split(":")[0]] if r.status == 200 else r.status for r in outcomes
        )

    # The task's sequence: region1/zone1 while it is healthy, then region1/zone2, then the
    # failover region region2 (not region3), then region3.
    assert run(served(10)) == {"region1/zone1": 10}
    for address, next_locality in [("10.1.1.1", "region1/zone2"), ("10.1.1.2", "region2/zone3"),
                                   ("10.2.3.1", "region3/zone4")]:  # fmt: skip
        upstreams.behaviour[f"{address}:5000"] = status(503)
        assert run(served(11)) == {503: 1, next_locality: 10}  # one failure ejects it
