"""Each engine mechanism, observed from outside the stack (status, headers, reasons, which
endpoint served): a request's life. In-flight
requests finish on the config they started with; a cancelled request gives back what it held; no
reference cycle on the fast path; a sender that raises is answered and gives every count back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.aio import until
from tests.cycles import cycle_garbage_of
from tests.engine.conftest import (
    Upstreams,
    build_engine,
    handle,
    ok,
    request,
    run,
    workload,
)
from tests.engine.outbound_config import (
    SUBSETS,
    TABLE,
    vs,
)
from tulle.engine.message import Response

pytestmark = pytest.mark.usefixtures("engine_path")


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
