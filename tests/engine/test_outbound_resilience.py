"""Each engine mechanism, observed from outside the stack (status, headers, reasons, which
endpoint served): resilience. Retries (per try
timeout, retry budget, another endpoint after a connect failure), outlier detection, the circuit
breaker and connections held to the limit with pending requests queued."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.conftest import (
    Clock,
    Upstreams,
    build_engine,
    handle,
    refuse,
    request,
    run,
    status,
    workload,
)
from tests.engine.outbound_config import (
    TABLE,
    many,
    rule,
    vs,
)

pytestmark = pytest.mark.usefixtures("engine_path")


def test_retries_turn_a_half_failing_backend_into_success():
    config = workload("v1") + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 3, retryOn: 5xx}""")
    every_other = iter([i % 2 == 0 for i in range(100000)])

    def half_failing(endpoint, req):
        return status(503 if next(every_other) else 200)(endpoint, req)

    upstreams = Upstreams({"10.0.0.1:80": half_failing})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, upstreams)
    responses = run(many(engine, 500))
    assert sum(r.status == 200 for r in responses) >= 495
    assert max(r.attempts for r in responses) == 2


def test_without_retries_failures_pass_through():
    config = workload("v1") + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 0}""")
    engine = build_engine(
        config, {"v1": [("10.0.0.1", 80)]}, Upstreams({"10.0.0.1:80": status(503)})
    )
    response = run(handle(engine, TABLE, request()))
    assert (response.status, response.attempts) == (503, 1)


def test_connect_failure_is_retried_elsewhere_and_reasoned_when_all_fail():
    config = workload("v1") + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 2, retryOn: connect-failure}""")
    upstreams = Upstreams({"10.0.0.1:80": refuse})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80), ("10.0.0.2", 80)]}, upstreams)
    responses = run(many(engine, 20))
    assert all(r.status == 200 and r.upstream == "10.0.0.2:80" for r in responses)
    dead = build_engine(config, {"v1": [("10.0.0.1", 80)]}, Upstreams({"10.0.0.1:80": refuse}))
    failed = run(dead.handle(TABLE, request()))
    assert failed.status == 503
    assert failed.flag == "UF,URX"
    assert failed.header("x-tulle-error") == (
        "upstream connect connection refused 10.0.0.1:80 (cluster outbound|8080||web.default.svc.cluster.local)"
    )


def test_outlier_detection_ejects_a_bad_endpoint_until_its_time_is_up():
    config = workload("v1") + rule(
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}}"
    )
    clock = Clock()
    upstreams = Upstreams({"10.0.0.3:80": status(500)})
    members = [("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)]
    engine = build_engine(config, {"v1": members}, upstreams, clock)
    run(many(engine, 9))  # the bad one fails three times: ejected
    upstreams.calls.clear()
    run(many(engine, 30))
    assert "10.0.0.3:80" not in upstreams.calls
    clock.now += 31
    upstreams.calls.clear()
    run(many(engine, 30))
    assert "10.0.0.3:80" in upstreams.calls  # back after the ejection time
    state = engine.clusters["outbound|8080||web.default.svc.cluster.local"]
    assert state.ejections == 2  # and ejected again, for longer
    health = state.outlier.hosts["10.0.0.3:80"]
    assert health.ejected_until == clock.now + 60


def test_breaker_overflow_is_503_with_the_reason():
    config = workload("v1") + rule("{connectionPool: {http: {http2MaxRequests: 2}}}")
    upstreams = Upstreams(delay={"10.0.0.1:80": 0.2})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, upstreams)

    async def burst():
        return await asyncio.gather(*(handle(engine, TABLE, request()) for _ in range(5)))

    responses = run(burst())
    assert sorted(r.status for r in responses) == [200, 200, 503, 503, 503]
    overflow = next(r for r in responses if r.status == 503)
    assert overflow.flag == "UO"
    assert overflow.header("x-tulle-error") == (
        "circuit open: max requests 2 reached (cluster outbound|8080||web.default.svc.cluster.local)"
    )


def test_per_try_timeout_then_another_endpoint():
    config = workload("v1") + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 2, perTryTimeout: 50ms, retryOn: 5xx}""")
    upstreams = Upstreams(delay={"10.0.0.1:80": 1.0})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80), ("10.0.0.2", 80)]}, upstreams)
    responses = run(many(engine, 4))
    assert all(r.status == 200 and r.upstream == "10.0.0.2:80" for r in responses)


def test_retry_budget_limits_retries_during_an_outage():
    config = workload("v1") + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 5, retryOn: 5xx}""")
    upstreams = Upstreams({"10.0.0.1:80": status(503)}, delay={"10.0.0.1:80": 0.05})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, upstreams)

    async def outage():
        return await asyncio.gather(*(handle(engine, TABLE, request()) for _ in range(50)))

    responses = run(outage())
    assert all(r.status == 503 for r in responses)
    # Without a budget 50 requests x 6 attempts = 300 calls; the budget keeps retries in flight
    # to 20% of the requests (at least 3).
    assert len(upstreams.calls) < 150


def test_max_connections_queue_as_pending_up_to_the_limit():
    config = workload("v1") + rule(
        "{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}"
    )
    upstreams = Upstreams(delay={"10.0.0.1:80": 0.1})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, upstreams)

    async def burst():
        return await asyncio.gather(*(handle(engine, TABLE, request()) for _ in range(4)))

    responses = run(burst())
    # One on the connection, one waiting for it, two over the pending limit.
    assert sorted(r.status for r in responses) == [200, 200, 503, 503]
    overflow = next(r for r in responses if r.status == 503)
    assert overflow.header("x-tulle-error") == (
        "circuit open: max pending requests 1 reached (cluster outbound|8080||web.default.svc.cluster.local)"
    )
    state = engine.clusters["outbound|8080||web.default.svc.cluster.local"]
    assert (state.counters.connections, state.counters.pending) == (0, 0)
