"""Each engine mechanism, observed from outside the stack (status, headers, reasons, which
endpoint served): routing. No route, a weighted split, header matches and
edits, redirects and rewrites, and load balancing (ring hash, least request)."""

from __future__ import annotations

import asyncio

import pytest

from tests.aio import until
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
    TWO,
    many,
    rule,
    served,
    vs,
)

pytestmark = pytest.mark.usefixtures("engine_path")


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
