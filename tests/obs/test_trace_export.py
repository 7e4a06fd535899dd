"""The span exporter against a real OTLP/HTTP receiver on loopback (a stdlib HTTP server that
decodes each body as an ExportTraceServiceRequest): batches, the bearer token, a bounded queue
that drops (and counts) instead of blocking or growing while the receiver is stuck, and failed
exports counted, never raised."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.e2e.conftest import wait_until
from tests.otlp_receiver import Receiver, otlp_receiver
from tulle.control.traces.otlp_messages import Span as ProtoSpan
from tulle.obs.finished import Finished
from tulle.obs.otlp import (
    _ANSWERED,
    _ATTEMPTS,
    _NAMES,
    _RECEIVED,
    _REQUEST_ID,
    _SENT,
    _SHAPES,
    _URL_FULL,
    span_bytes,
)
from tulle.obs.otlp_wire import CACHE, CACHE_MAX, Attributes
from tulle.obs.span_events import Attempt
from tulle.obs.trace_export import EndpointError, SpanExporter, otlp_url
from tulle.obs.tracing import CLIENT, SERVER, Span


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as state:
        yield state


@pytest.fixture
def fresh(receiver: Receiver) -> Receiver:
    receiver.clear()
    return receiver


def record(index: int, kind: int = CLIENT, status: int = 200, flag: str = "-") -> Finished:
    done = Finished(
        "outbound", "GET", "catalog:8080", f"/items/{index}?q=1", "10.0.0.9", f"req-{index}", 0,
        status, flag, "no healthy endpoint" if flag != "-" else "", "default",
        "outbound|8080||catalog.default.svc.cluster.local", "10.0.0.1:8080", "catalog-0",
        2, 17, 1000.0 + index, 1000.5 + index,
    )  # fmt: skip
    span = Span(f"{index + 1:032x}", f"{index + 1:016x}", "ab" * 8, kind)
    span.event(1000.2 + index, "attempt", [("tulle.attempt", 1), ("tulle.retried", True)])
    done.span = span
    return done


def exporter(receiver: Receiver, **options: object) -> SpanExporter:
    return SpanExporter(
        f"http://127.0.0.1:{receiver.port}",
        [("service.name", "frontend"), ("service.namespace", "default")],
        lambda: "the-token",
        **options,  # type: ignore[arg-type]
    )


def test_spans_arrive_as_otlp_protobuf_in_batches_with_the_token(fresh: Receiver) -> None:
    sender = exporter(fresh, batch=4, interval=0.05).start()
    try:
        for index in range(10):
            sender.record(record(index))
        wait_until(lambda: len(fresh.spans) == 10, timeout=30)
    finally:
        sender.stop()
    assert [len(r.resource_spans[0].scope_spans[0].spans) for r in fresh.requests][:2] == [4, 4]
    assert all(h["authorization"] == "Bearer the-token" for h in fresh.headers)
    assert all(h["content-type"] == "application/x-protobuf" for h in fresh.headers)
    resource = {kv.key: kv.value.string_value for kv in fresh.requests[0].resource_spans[0].resource.attributes}  # fmt: skip
    assert resource["service.name"] == "frontend"
    span = fresh.spans[3]
    assert span.trace_id.hex() == f"{4:032x}"
    assert span.parent_span_id.hex() == "ab" * 8
    assert span.name == "GET /items/3"
    assert span.end_time_unix_nano - span.start_time_unix_nano == 500_000_000
    attributes = {kv.key: kv.value for kv in span.attributes}
    assert attributes["http.request.method"].string_value == "GET"
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["server.address"].string_value == "catalog"
    assert attributes["http.request.resend_count"].int_value == 1
    assert attributes["tulle.upstream_cluster"].string_value.startswith("outbound|8080||catalog")
    assert [e.name for e in span.events] == ["attempt"]


def test_the_queue_is_bounded_and_drops_are_counted_while_the_collector_is_stuck(
    fresh: Receiver,
) -> None:
    registry = CollectorRegistry()
    sender = exporter(fresh, queue_size=8, batch=4, interval=0.05, registry=registry).start()
    fresh.hold.clear()  # the collector takes the first batch and never answers (yet)
    try:
        for index in range(4):
            sender.record(record(index))
        assert fresh.arrived.wait(30)
        for index in range(4, 104):  # the request path goes on: never waits, never grows
            sender.record(record(index))
        assert len(sender.records) == 8
        assert sender.dropped == 92
        fresh.hold.set()
        wait_until(lambda: len(fresh.spans) == 12, timeout=30)
    finally:
        fresh.hold.set()
        sender.stop()
    metrics = generate_latest(registry).decode()
    assert "tulle_trace_spans_exported_total 12.0" in metrics
    assert 'tulle_trace_spans_dropped_total{reason="queue_full"} 92.0' in metrics
    assert 'tulle_trace_spans_dropped_total{reason="export_failed"} 0.0' in metrics


def test_a_full_batch_sends_whole_batches_and_leaves_the_rest_for_the_next(
    fresh: Receiver,
) -> None:
    sender = exporter(fresh, batch=4, interval=3600).start()  # no interval round in the test
    fresh.hold.clear()  # the first post waits at the collector while more are recorded
    try:
        for index in range(4):
            sender.record(record(index))
        assert fresh.arrived.wait(30)
        for index in range(4, 7):
            sender.record(record(index))
        fresh.hold.set()
        wait_until(lambda: sender.exported == 4, timeout=30)
        sender.record(record(7))  # the fourth after the batch: a full batch again
        wait_until(lambda: len(fresh.spans) == 8, timeout=30)
        assert [len(r.resource_spans[0].scope_spans[0].spans) for r in fresh.requests] == [4, 4]
        sender.record(record(8))
    finally:
        fresh.hold.set()
        sender.stop()  # the last round sends what is left, however few
    assert len(fresh.spans) == 9


def test_failed_exports_are_counted_not_raised(fresh: Receiver) -> None:
    fresh.status = 503
    sender = exporter(fresh, batch=2)
    for index in range(3):
        sender.record(record(index, SERVER, status=503, flag="UH"))
    sender.flush()
    assert (sender.exported, sender.failed) == (0, 3)
    refused = SpanExporter("http://127.0.0.1:9", [("service.name", "x")])  # nothing listens
    refused.record(record(1))
    refused.flush()
    assert (refused.exported, refused.failed) == (0, 1)
    span = fresh.spans[0]  # the receiver decoded them: a mesh-made failure, reason on the span
    attributes = {kv.key: kv.value.string_value for kv in span.attributes}
    assert attributes["tulle.response_flags"] == "UH"
    assert attributes["tulle.reason"] == "no healthy endpoint"
    assert attributes["error.type"] == "UH"
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert span.status.message == "no healthy endpoint"


def test_endpoints_are_checked() -> None:
    assert otlp_url("http://collector:4318") == ("http", "collector", 4318, "/v1/traces")
    assert otlp_url("https://c.example/otlp/v1/traces") == (
        "https", "c.example", 443, "/otlp/v1/traces"
    )  # fmt: skip
    for bad in ("collector:4317", "grpc://c:4317", "http://", "http://c:port"):
        with pytest.raises(EndpointError, match="OTLP endpoint"):
            otlp_url(bad)


def test_the_attribute_cache_is_bounded_and_changes_no_byte() -> None:
    """Encoded attributes are cached by value: a value seen before encodes to the same bytes,
    and however many values pass, the cache stays within its bound."""
    first = Attributes(b"\x4a")
    first.string("server.address", "catalog")
    first.integer("http.response.status_code", 503)
    again = Attributes(b"\x4a")
    again.string("server.address", "catalog")
    again.integer("http.response.status_code", 503)
    fresh = Attributes(b"\x4a")
    fresh.string("server.address", "catalog", cache=False)
    assert again.encoded() == first.encoded()
    assert fresh.encoded() == first.parts[0]
    for index in range(CACHE_MAX + 100):
        Attributes(b"\x4a").string("url.path", f"/items/{index}")
    assert 0 < len(CACHE) <= CACHE_MAX


def test_spans_encode_the_same_from_the_caches_and_the_caches_are_bounded() -> None:
    """What repeats is written once and kept (a span's name; its repeating attributes, status
    and flags; an attempt's event but its duration; the body sizes; the request id's head): a
    span written from the caches is the bytes written without them, and decodes as the span it
    is; many peers, paths, sizes and attempts keep every cache within its bound."""
    caches: list[dict[Any, Any]] = [
        _ATTEMPTS,
        _NAMES,
        _RECEIVED,
        _SENT,
        _SHAPES,
        _URL_FULL.heads,
        _REQUEST_ID.heads,
    ]
    for cache in caches:
        cache.clear()
    done = record(3, CLIENT)
    span = done.span
    assert span is not None
    span.attempt_started = 1000.3
    span.attempt(1000.4, 2, "10.0.0.1:8080", 503, "", "", False)
    span.attempt_started = 1000.41
    span.attempt(1000.45, 3, "10.0.0.2:8080", 0, "connect", "refused", True)
    missed = span_bytes(done)
    assert all(caches)
    assert span_bytes(done) == missed
    decoded = ProtoSpan.FromString(missed)
    assert (decoded.trace_id.hex(), decoded.span_id.hex()) == (f"{4:032x}", f"{4:016x}")
    assert decoded.name == "GET /items/3"
    assert decoded.kind == ProtoSpan.SPAN_KIND_CLIENT
    assert (decoded.start_time_unix_nano, decoded.end_time_unix_nano) == (
        1003 * 10**9,
        1003_500_000_000,
    )
    attributes = {kv.key: kv.value for kv in decoded.attributes}
    assert attributes["url.full"].string_value == "http://catalog:8080/items/3?q=1"
    assert attributes["http.response.body.size"].int_value == 17
    assert attributes["http.request.body.size"].int_value == 0
    ids = attributes["http.request.header.x-request-id"].array_value.values
    assert [v.string_value for v in ids] == ["req-3"]
    events = [
        (e.name, e.time_unix_nano, {kv.key: kv.value for kv in e.attributes})
        for e in decoded.events
    ]
    assert [(name, when) for name, when, _ in events] == [
        ("attempt", 1003_200_000_000),
        ("attempt", int(1000.4 * 1e9)),
        ("attempt", int(1000.45 * 1e9)),
    ]
    second, third = events[1][2], events[2][2]
    assert second["tulle.attempt"].int_value == 2
    assert second["http.response.status_code"].int_value == 503
    assert second["tulle.retried"].bool_value is False
    assert second["tulle.duration_ms"].double_value == pytest.approx(100.0)
    assert (third["error.type"].string_value, third["tulle.reason"].string_value) == (
        "connect",
        "refused",
    )
    assert "http.response.status_code" not in third
    assert third["tulle.retried"].bool_value is True
    assert third["tulle.duration_ms"].double_value == pytest.approx(40.0)
    other = record(4, SERVER, status=503, flag="UH")
    assert span_bytes(other) != missed
    for index in range(CACHE_MAX + 100):
        done.upstream = f"10.0.{index // 250}.{index % 250}:8080"
        done.path, done.sent, done.request_id = f"/items/{index}", index, "r" * (index % 200)
        span.events, span.first_ended = None, 0.0
        span.attempt_started = 0.5
        # even: a first attempt kept in the span (by endpoint and status); odd: a listed one
        span.attempt(1.0, 1 if index % 2 else index + 2, done.upstream, 200, "", "", False)
        again = span_bytes(done)
        assert ProtoSpan.FromString(again).name == f"GET /items/{index}"
    every = [*caches, _ANSWERED, _NAMES["GET"], _ANSWERED[done.upstream]]
    assert all(0 < len(cache) <= CACHE_MAX for cache in every)


def test_a_first_attempt_kept_in_the_span_s_fields_is_written_as_an_attempt_object_is() -> None:
    """A request's only attempt, the first thing that happened to it, is kept in the span's
    own fields (no object per request): it is written as the same event, and what happens
    after it (a fallback, the fallback's attempt) follows it in order."""
    inline, listed = record(5, CLIENT), record(5, CLIENT)
    assert inline.span is not None
    assert listed.span is not None
    inline.span.events = None
    inline.span.attempt_started = 1005.25
    inline.span.attempt(1005.375, 1, "10.0.0.1:8080", 200, "", "", False)
    assert inline.span.events is None
    listed.span.events = [Attempt(1005.375, 1005.25, 1, "10.0.0.1:8080", 200, "", "", False)]
    assert span_bytes(inline) == span_bytes(listed)
    inline.span.event(1005.4, "fallback", [("tulle.upstream_cluster", "cache")])
    inline.span.attempt_started = 1005.41
    inline.span.attempt(1005.45, 1, "10.0.0.9:8080", 200, "", "", False)
    decoded = ProtoSpan.FromString(span_bytes(inline))
    seen = [(e.name, {kv.key: kv.value for kv in e.attributes}) for e in decoded.events]
    assert [name for name, _ in seen] == ["attempt", "fallback", "attempt"]
    assert seen[0][1]["tulle.upstream_endpoint"].string_value == "10.0.0.1:8080"
    assert seen[0][1]["tulle.duration_ms"].double_value == pytest.approx(125.0)
    assert seen[2][1]["tulle.upstream_endpoint"].string_value == "10.0.0.9:8080"
    assert seen[2][1]["tulle.duration_ms"].double_value == pytest.approx(40.0)
    assert [type(e).__name__ for e in inline.span.all_events()] == ["Attempt", "tuple", "Attempt"]
