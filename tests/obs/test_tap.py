"""``tulle tap``'s source: filters applied to the finished-request record, a bounded buffer per
subscriber (one that never reads loses events, counted, and holds no more), the events' fields,
the JSON-lines feed, and the dropped-events counter in the metrics."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tulle.engine.message import Request, Response, finished
from tulle.obs.finished import Finished
from tulle.obs.tap import (
    MAX_SUBSCRIBERS,
    Feed,
    Tap,
    TapCollector,
    TapFilter,
    TapFilterError,
    event,
)


def record(
    path: str = "/pay", method: str = "POST", status: int = 200, authority: str = "payment:8080",
    reason: str = "", service: str | None = None, principal: str | None = None,
) -> Finished:  # fmt: skip
    request = Request(method, path, authority, [("x-request-id", "r-1")], b"ab", "10.0.0.7")
    request.peer_principal = principal
    response = Response(status, [], b"", reason=reason, cluster="outbound|8080||payment",
                        upstream="127.0.0.1:9001", attempts=2)  # fmt: skip
    response.upstream_workload = "payment"
    return finished("outbound", request, response, 100.0, 100.25, 5, service)


@pytest.mark.parametrize(
    ("given", "done", "passes"),
    [
        (TapFilter(), record(), True),
        (TapFilter(path="/pa"), record(path="/pay/1"), True),  # a prefix, as linkerd's --path
        (TapFilter(path="/pay/"), record(path="/pay"), False),
        (TapFilter(method="get"), record(method="GET"), True),
        (TapFilter(method="GET"), record(method="POST"), False),
        (TapFilter(authority="payment:8080"), record(), True),
        (TapFilter(authority="payment"), record(), False),
        (TapFilter(status="503"), record(status=503), True),
        (TapFilter(status="503"), record(status=500), False),
        (TapFilter(status="5xx"), record(status=500), True),
        (TapFilter(status="5XX"), record(status=599), True),
        (TapFilter(status="5xx"), record(status=404), False),
        (TapFilter(status="4xx"), record(status=404), True),
        (TapFilter(status="0"), record(status=0), True),
        (TapFilter(status="5xx"), record(status=0), False),
        (TapFilter(path="/pay", method="POST", status="5xx"), record(status=503), True),
        (TapFilter(path="/pay", method="GET", status="5xx"), record(status=503), False),
    ],
)
def test_filters(given: TapFilter, done: Finished, passes: bool):
    assert given.matches(done) is passes


@pytest.mark.parametrize("status", ["5x", "6xx", "x5xx", "abc", "5000", "-1"])
def test_a_status_filter_that_means_nothing_is_refused_with_the_reason(status: str):
    with pytest.raises(TapFilterError, match=f"status {status!r}: give a code"):
        TapFilter(status=status)


def test_an_untapped_process_is_inactive_and_a_tap_that_ends_leaves_it_so():
    tap = Tap()
    assert tap.active is False
    one = tap.subscribe(TapFilter())
    assert one is not None
    assert tap.active is True
    tap.unsubscribe(one)
    assert (tap.active, tap.subscribers) == (False, ())


def test_each_subscriber_gets_what_its_own_filter_passes():
    tap = Tap()
    failures = tap.subscribe(TapFilter(status="5xx"))
    everything = tap.subscribe(TapFilter())
    assert failures is not None
    assert everything is not None
    ok, failed = record(), record(status=503)
    tap.publish(ok)
    tap.publish_retry(failed)
    assert failures.take() == [(failed, True)]
    assert everything.take() == [(ok, False), (failed, True)]
    assert everything.take() == []


def test_a_subscriber_that_never_reads_keeps_at_most_its_limit_and_the_rest_are_counted():
    tap = Tap()
    stuck = tap.subscribe(TapFilter(), limit=100)
    reading = tap.subscribe(TapFilter(), limit=100)
    assert stuck is not None
    assert reading is not None
    done = record()
    for _ in range(10):
        for _ in range(50):
            tap.publish(done)
        assert len(reading.take()) == 50  # a tap that keeps up loses nothing
    assert len(stuck.events) == 100  # the stuck one holds no more than its limit
    assert stuck.dropped == 400
    assert reading.dropped == 0
    assert tap.dropped == 400
    registry = CollectorRegistry()
    registry.register(TapCollector(tap))
    assert "tulle_tap_events_dropped_total 400.0" in generate_latest(registry).decode()


def test_no_more_than_the_most_subscribers_listen_at_once():
    tap = Tap()
    listening = [tap.subscribe(TapFilter()) for _ in range(MAX_SUBSCRIBERS)]
    assert None not in listening
    assert tap.subscribe(TapFilter()) is None


def test_an_outbound_event_names_the_upstream_and_the_mesh_reason():
    done = record(status=503, reason="upstream connect refused 127.0.0.1:9001")
    assert event(done) == {
        "direction": "outbound", "start_time": 100.0, "src": "10.0.0.7",
        "dst": "127.0.0.1:9001", "dst_workload": "payment", "tls": False, "peer": "",
        "method": "POST", "authority": "payment:8080", "path": "/pay", "status": 503,
        "latency_ms": 250.0, "request_bytes": 2, "response_bytes": 5, "flags": "-",
        "reason": "upstream connect refused 127.0.0.1:9001", "route": None,
        "cluster": "outbound|8080||payment", "attempts": 2, "retried": False,
        "request_id": "r-1",
    }  # fmt: skip
    assert event(done, retried=True)["attempt"] == 2


def test_a_failure_the_mesh_made_before_choosing_an_endpoint_names_the_authority():
    request = Request("POST", "/pay", "payment:8080", [], b"", "10.0.0.7")
    aborted = Response(503, [], b"", flag="FI", reason="fault injected: abort")
    seen = event(finished("outbound", request, aborted, 1.0, 1.0, 22))
    assert (seen["dst"], seen["flags"], seen["reason"]) == (
        "payment:8080", "FI", "fault injected: abort",
    )  # fmt: skip


def test_an_inbound_event_names_the_service_and_the_callers_proven_identity():
    principal = "spiffe://cluster.local/ns/default/sa/frontend"
    seen = event(record(service="payment", principal=principal))
    assert (seen["direction"], seen["dst"], seen["tls"], seen["peer"]) == (
        "inbound", "payment", True, principal,
    )  # fmt: skip


def test_the_feed_sends_json_lines_says_what_was_dropped_and_ends_after_max():
    async def scenario() -> list[bytes]:
        tap = Tap()
        subscriber = tap.subscribe(TapFilter(status="5xx"), limit=2)
        assert subscriber is not None
        feed = Feed(tap, subscriber, most=3, period=0.0)
        for status in (503, 200, 500, 502):  # 502 is one past the limit: dropped
            tap.publish(record(status=status))
        chunks = [await feed.__anext__()]
        tap.publish(record(status=504))
        chunks += [chunk async for chunk in feed]
        assert tap.active is False  # the feed ended: its subscription with it
        return chunks

    chunks = asyncio.run(scenario())
    lines = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert [line.get("status") for line in lines] == [503, 500, None, 504]
    assert lines[2] == {"dropped": 1}


def test_closing_the_feed_unsubscribes():
    tap = Tap()
    subscriber = tap.subscribe(TapFilter())
    assert subscriber is not None
    asyncio.run(Feed(tap, subscriber).aclose())
    assert tap.active is False
