"""Each engine mechanism, observed from outside the stack (status, headers, reasons, which
endpoint served)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest

from tests.aio import until
from tests.cycles import cycle_garbage_of
from tests.engine.conftest import (
    Clock,
    Upstreams,
    build_engine,
    handle,
    ok,
    refuse,
    request,
    run,
    status,
    workload,
)
from tests.manifests import destination_rule, virtual_service
from tulle.engine.message import Request, Response
from tulle.engine.outbound import Engine, grpc_timeout

pytestmark = pytest.mark.usefixtures("engine_path")

TABLE = "http_proxy"
TWO = workload("v1") + workload("v2")


def vs(http: str) -> str:
    return virtual_service(http)


def rule(traffic_policy: str) -> str:
    """A DestinationRule for web with ``traffic_policy`` (YAML flow style)."""
    return destination_rule(traffic_policy)


SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
"""


async def many(engine, count: int, **kwargs) -> list[Response]:
    return [await handle(engine, TABLE, request(**kwargs)) for _ in range(count)]


def served(responses: list[Response]) -> collections.Counter[str]:
    return collections.Counter(r.upstream for r in responses if r.status == 200)


def test_no_route_is_404_with_the_reason():
    engine = build_engine(TWO, {"v1": [("10.0.0.1", 80)]}, Upstreams())
    response = run(handle(engine, TABLE, request(authority="nowhere:80")))
    assert response.status == 404
    assert response.flag == "NR"
    assert response.header("x-tulle-error") == "no route for nowhere:80/"


def test_weighted_split_holds_within_statistical_bounds():
    config = (
        TWO
        + SUBSETS
        + vs("""\
    - route:
        - {destination: {host: web, subset: v1}, weight: 80}
        - {destination: {host: web, subset: v2}, weight: 20}""")
    )
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)], "v2": [("10.0.0.2", 80)]}, Upstreams())
    counts = served(run(many(engine, 20_000)))
    # Binomial(20000, 0.2): standard deviation 0.28%; ±3% is over ten of them.
    assert 0.17 <= counts["10.0.0.2:80"] / 20_000 <= 0.23


def test_header_match_and_header_edits():
    config = (
        TWO
        + SUBSETS
        + vs("""\
    - match: [{headers: {x-user: {exact: jason}}}]
      route:
        - destination: {host: web, subset: v2}
          headers: {request: {set: {x-picked: v2}}}
      headers: {response: {add: {x-route: jason}}}
    - route: [{destination: {host: web, subset: v1}}]""")
    )
    seen: list[list] = []

    def record(endpoint, req):
        seen.append(req.headers)
        return ok(endpoint, req)

    upstreams = Upstreams({"10.0.0.2:80": record})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)], "v2": [("10.0.0.2", 80)]}, upstreams)
    jason = run(handle(engine, TABLE, request(headers=[("x-user", "jason")])))
    other = run(handle(engine, TABLE, request(headers=[("x-user", "ann")])))
    assert (jason.upstream, other.upstream) == ("10.0.0.2:80", "10.0.0.1:80")
    assert ("x-picked", "v2") in seen[0]
    assert jason.header("x-route") == "jason"


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


def test_abort_fault_percentage():
    config = workload("v1") + vs("""\
    - fault: {abort: {httpStatus: 418, percentage: {value: 30}}}
      route: [{destination: {host: web}}]""")
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, Upstreams())
    responses = run(many(engine, 20_000))
    aborted = [r for r in responses if r.status == 418]
    # Binomial(20000, 0.3): standard deviation 0.32%; ±3% is over nine of them.
    assert 0.27 <= len(aborted) / 20_000 <= 0.33
    assert {r.flag for r in aborted} == {"FI"}


def _slow_endpoint(route_timeout: str, delay: float) -> Engine:
    """An engine whose route has ``route_timeout`` and whose one endpoint answers after
    ``delay`` seconds."""
    config = workload("v1") + vs(f"""\
    - route: [{{destination: {{host: web}}}}]
      timeout: {route_timeout}""")
    upstreams = Upstreams(delay={"10.0.0.1:80": delay})
    return build_engine(config, {"v1": [("10.0.0.1", 80)]}, upstreams)


def test_delay_fault_and_route_timeout():
    engine = _slow_endpoint("50ms", 1.0)
    response = run(handle(engine, TABLE, request()))
    assert (response.status, response.flag) == (504, "UT")
    assert "request timeout 0.05s exceeded" in (response.header("x-tulle-error") or "")


def _grpc_call(deadline: str) -> Request:
    headers = [("content-type", "application/grpc"), ("grpc-timeout", deadline)]
    return Request("POST", "/helloworld.Greeter/SayHello", "web:8080", headers, b"", http2=True)


def test_a_grpc_clients_deadline_ends_the_call_when_it_comes_first():
    engine = _slow_endpoint("5s", 0.3)
    expired = run(handle(engine, TABLE, _grpc_call("50m")))
    assert (expired.status, expired.flag, expired.header("grpc-status")) == (200, "UT", "4")
    assert expired.header("x-tulle-error") == (
        "grpc-timeout 0.05s exceeded (cluster outbound|8080||web.default.svc.cluster.local)"
    )
    # A deadline past the answer, or one that is not the protocol's form, changes nothing.
    for deadline in ("2S", "5x", "123456789m"):
        assert run(handle(engine, TABLE, _grpc_call(deadline))).status == 200


def test_grpc_timeout_values():
    assert [grpc_timeout(v) for v in ("1H", "2M", "3S", "250m", "7u", "9n", "99999999S")] == (
        pytest.approx([3600.0, 120.0, 3.0, 0.25, 7e-6, 9e-9, 99999999.0])
    )
    assert [grpc_timeout(v) for v in (None, "", "S", "1s", "-1S", "1.5S", "٣S", "123456789S")] == [
        None
    ] * 8


def test_per_try_timeout_then_another_endpoint():
    config = workload("v1") + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 2, perTryTimeout: 50ms, retryOn: 5xx}""")
    upstreams = Upstreams(delay={"10.0.0.1:80": 1.0})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80), ("10.0.0.2", 80)]}, upstreams)
    responses = run(many(engine, 4))
    assert all(r.status == 200 and r.upstream == "10.0.0.2:80" for r in responses)


def test_rate_limit_bucket():
    config = (
        workload("v1")
        + vs("""\
    - name: all
      route: [{destination: {host: web}}]""")
        + """\
apiVersion: tulle.dev/v1alpha1
kind: RateLimit
metadata: {name: web-out}
spec:
  target: {host: web}
  limit: {requests: 2, unit: second, burst: 3}
"""
    )
    clock = Clock()
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, Upstreams(), clock)
    first = run(many(engine, 5))
    assert [r.status for r in first] == [200, 200, 200, 429, 429]
    assert first[3].header("x-tulle-error") == "rate limited by outbound_default_web-out"
    clock.now += 1
    assert [r.status for r in run(many(engine, 3))] == [200, 200, 429]


def test_ring_hash_keeps_a_key_on_one_endpoint():
    config = workload("v1") + rule("{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}")
    members = [(f"10.0.0.{i}", 80) for i in range(1, 5)]
    engine = build_engine(config, {"v1": members}, Upstreams())
    chosen = {}
    for user in ("ann", "bob", "cyd", "dan", "eve", "fay"):
        counts = served(run(many(engine, 10, headers=[("x-user", user)])))
        assert len(counts) == 1
        chosen[user] = next(iter(counts))
    assert len(set(chosen.values())) >= 2


def test_least_request_prefers_the_idle_endpoint():
    config = workload("v1") + rule("{loadBalancer: {simple: LEAST_REQUEST}}")
    upstreams = Upstreams(held={"10.0.0.1:80", "10.0.0.2:80"})
    engine = build_engine(config, {"v1": [("10.0.0.1", 80), ("10.0.0.2", 80)]}, upstreams)

    async def trial() -> tuple[str, str]:
        first = asyncio.create_task(handle(engine, TABLE, request()))
        await until(lambda: len(upstreams.waiting) == 1)  # the first is in flight now
        second = asyncio.create_task(handle(engine, TABLE, request()))
        await until(lambda: len(upstreams.waiting) == 2)
        upstreams.release()
        return (await first).upstream, (await second).upstream

    async def trials():
        return [await trial() for _ in range(5)]

    # With one request in flight, power of two choices sends the next to the idle endpoint.
    for busy, chosen in run(trials()):
        assert chosen != busy


def test_redirect_and_rewrite():
    config = workload("v1") + vs("""\
    - match: [{uri: {prefix: /old}}]
      redirect: {uri: /new, redirectCode: 308}
    - match: [{uri: {prefix: /api/}}]
      rewrite: {uri: /v2/, authority: internal}
      route: [{destination: {host: web}}]""")
    seen = []

    def record(endpoint, req):
        seen.append((req.path, req.authority))
        return ok(endpoint, req)

    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, Upstreams({"10.0.0.1:80": record}))
    moved = run(handle(engine, TABLE, request("/old/page?x=1")))
    assert (moved.status, moved.header("location")) == (308, "http://web:8080/new?x=1")
    run(handle(engine, TABLE, request("/api/items?id=3")))
    assert seen == [("/v2/items?id=3", "internal")]


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


def test_in_flight_requests_finish_on_the_config_they_started_with():
    config_a = (
        workload("v1")
        + workload("v2")
        + SUBSETS
        + vs("""\
    - route: [{destination: {host: web, subset: v1}}]""")
    )
    config_b = config_a.replace("subset: v1}}]", "subset: v2}}]")
    members = {"v1": [("10.0.0.1", 80)], "v2": [("10.0.0.2", 80)]}
    upstreams = Upstreams(held={"10.0.0.1:80"})
    engine = build_engine(config_a, members, upstreams)
    newer = build_engine(config_b, members, Upstreams())

    async def swap():
        first = asyncio.create_task(handle(engine, TABLE, request()))
        await until(lambda: upstreams.waiting)  # the first is in flight now
        engine.update(newer.config)
        second = await handle(engine, TABLE, request())
        upstreams.release()
        return await first, second

    first, second = run(swap())
    assert (first.status, first.upstream) == (200, "10.0.0.1:80")
    assert (second.status, second.upstream) == (200, "10.0.0.2:80")


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


CACHE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache}
spec:
  hosts: [cache.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 10.0.0.9}]
---
"""


def fallback(when: str = "[5xx]") -> str:
    return f"""\
apiVersion: tulle.dev/v1alpha1
kind: Fallback
metadata: {{name: web}}
spec:
  host: web
  to: {{host: cache}}
  when: {when}
---
"""


def test_a_failed_request_falls_back_after_its_retries():
    config = (
        workload("v1")
        + CACHE
        + fallback()
        + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 1, retryOn: 5xx}""")
    )
    upstreams = Upstreams({"10.0.0.1:8080": status(503)})
    engine = build_engine(config, {"v1": [("10.0.0.1", 8080)]}, upstreams)
    response = run(handle(engine, TABLE, request()))
    assert (response.status, response.upstream) == (200, "10.0.0.9:8080")
    assert response.cluster == "outbound|8080||cache.default.svc.cluster.local"
    assert upstreams.calls == ["10.0.0.1:8080", "10.0.0.1:8080", "10.0.0.9:8080"]


def test_what_does_not_fall_back():
    config = (
        workload("v1")
        + CACHE
        + fallback("[unavailable]")
        + vs("""\
    - match: [{headers: {x-abort: {exact: "1"}}}]
      fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
      route: [{destination: {host: web}}]
    - route: [{destination: {host: web}}]""")
    )
    upstreams = Upstreams({"10.0.0.1:8080": status(503)})
    engine = build_engine(config, {"v1": [("10.0.0.1", 8080)]}, upstreams)
    aborted = run(handle(engine, TABLE, request(headers=[("x-abort", "1")])))
    assert (aborted.status, aborted.flag) == (503, "FI")  # a fault is an answer, not a failure
    failed = run(handle(engine, TABLE, request()))
    assert (failed.status, failed.upstream) == (503, "10.0.0.1:8080")  # 5xx is not "unavailable"
    assert "10.0.0.9:8080" not in upstreams.calls


def test_an_unavailable_service_falls_back():
    config = (
        workload("v1")
        + CACHE
        + fallback("[unavailable]")
        + vs("    - route: [{destination: {host: web}}]")
    )
    upstreams = Upstreams()
    engine = build_engine(config, {}, upstreams)  # web has no endpoint at all
    response = run(handle(engine, TABLE, request()))
    assert (response.status, response.upstream) == (200, "10.0.0.9:8080")


def test_a_cancelled_request_gives_back_what_it_held_and_is_not_answered():
    # The client went away mid-attempt: the attempt is abandoned, the cluster's request,
    # connection and per-endpoint counts go back to zero, and nobody is answered.
    upstreams = Upstreams({"10.0.0.1:8080": ok}, held={"10.0.0.1:8080"})
    engine = build_engine(workload("v1"), {"v1": [("10.0.0.1", 8080)]}, upstreams)

    async def scenario() -> None:
        answered: list[Response] = []
        cancel = engine.dispatch(TABLE, request(), answered.append)
        await until(lambda: upstreams.waiting)  # the attempt is under way
        cluster = next(c for c in engine.clusters.values() if c.counters.requests)
        assert cluster.counters.connections == 1
        cancel()
        await until(upstreams.waiting[0].cancelled)  # the attempt was abandoned
        await until(lambda: cluster.counters.requests == 0)
        upstreams.release()  # (nothing is waiting for it now)
        assert answered == []
        assert cluster.counters.requests == 0
        assert cluster.counters.connections == 0
        assert set(cluster.active.values()) == {0}
        cancel()  # once is enough: a second call changes nothing
        assert cluster.counters.requests == 0

    run(scenario())


def test_a_request_on_the_fast_path_leaves_no_reference_cycle(engine_path):
    """Garbage only the cycle collector can free costs the proxy a collection every few dozen
    requests, and a pause in its latency; each request's objects must go when it ends."""
    engine = build_engine(workload("v1"), {"v1": [("10.0.0.1", 80)]}, Upstreams())

    async def one_request() -> None:
        assert (await handle(engine, TABLE, request())).status == 200

    assert run(cycle_garbage_of(one_request, 50)) == 0


def test_a_sender_that_raises_is_answered_and_gives_back_every_count(caplog):
    # A bug below the engine (a header no encoding can write, say) must not leave the request
    # unanswered or its breaker slot taken: five such requests would close the circuit for good.
    upstreams = Upstreams()
    engine = build_engine(workload("v1"), {"v1": [("10.0.0.1", 8080)]}, upstreams)

    def broken(*_: object) -> Callable[[], None]:
        raise UnicodeEncodeError("latin-1", "€", 0, 1, "ordinal not in range(256)")

    engine.start = broken

    async def scenario() -> None:
        for _ in range(10):
            answered: list[Response] = []
            engine.dispatch(TABLE, request(), answered.append)
            assert [r.status for r in answered] == [503]
            assert "unexpected UnicodeEncodeError" in answered[0].reason
        cluster = next(iter(engine.clusters.values()))
        assert cluster.counters.requests == 0
        assert cluster.counters.connections == 0
        assert set(cluster.active.values()) <= {0}

    run(scenario())
    assert "sending a request failed inside the proxy" in caplog.text
