"""The trace store without sockets: OTLP decoding (protobuf, OTLP JSON, gzip, spans that break
the protocol), the bound in spans with whole traces evicted oldest first, copies replaced, the
list's filters and order, and one trace in waterfall order."""

from __future__ import annotations

import json

import pytest
from google.protobuf.json_format import MessageToDict

from tests.control.otlp_spans import (
    BASE_NS,
    CLIENT,
    export,
    hex_span,
    hex_trace,
    span,
)
from tulle.control.traces.otlp import (
    JSON,
    OtlpError,
    decode_message,
    decode_request,
    gunzip,
    gzip_body,
)
from tulle.control.traces.spans import MAX_ATTRIBUTES, MAX_TEXT
from tulle.control.traces.store import Trace, TraceQuery, TraceStore
from tulle.control.traces.views import trace_json


def spans_of(*groups):
    return decode_message(export(*groups)).spans


def held(store: TraceStore, trace: int) -> Trace:
    kept = store.get(hex_trace(trace))
    assert kept is not None, f"trace {trace} is not in the store"
    return kept


def test_protobuf_spans_decode_with_their_service_ids_times_and_status() -> None:
    request = export(
        ("frontend", [span(1, 1, name="GET /", attributes={"http.response.status_code": 200})]),
        ("payment", [span(1, 2, parent=1, name="POST /pay", kind=CLIENT, start_ms=2,
                          duration_ms=5, error=True, events=[("attempt", 1.0)])]),
    )  # fmt: skip
    decoded = decode_request(request.SerializeToString())
    assert decoded.rejected == 0
    root, pay = decoded.spans
    assert (root.trace_id, root.span_id, root.parent_span_id) == (hex_trace(1), hex_span(1), "")
    assert (root.service, root.kind, root.status) == ("frontend", "server", "unset")
    assert root.attributes == {"http.response.status_code": 200}
    assert (pay.service, pay.kind, pay.status, pay.parent_span_id) == (
        "payment", "client", "error", hex_span(1),
    )  # fmt: skip
    assert pay.start_ns == BASE_NS + 2_000_000
    assert pay.duration_ns == 5_000_000
    assert [(e.name, e.time_ns - pay.start_ns) for e in pay.events] == [("attempt", 1_000_000)]


def test_otlp_json_with_hex_ids_decodes_as_protobuf_does() -> None:
    request = export(("cart", [span(7, 3, parent=2, name="GET /cart")]))
    data = MessageToDict(request)
    s = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    s["traceId"], s["spanId"], s["parentSpanId"] = hex_trace(7), hex_span(3), hex_span(2)
    (decoded,) = decode_request(json.dumps(data).encode(), JSON).spans
    assert (decoded.trace_id, decoded.span_id, decoded.parent_span_id) == (
        hex_trace(7), hex_span(3), hex_span(2),
    )  # fmt: skip
    assert decoded.service == "cart"
    s["traceId"] = "not hex"
    with pytest.raises(OtlpError, match="traceId 'not hex' is not hex"):
        decode_request(json.dumps(data).encode(), JSON)


def test_gzip_is_undone_within_a_bound() -> None:
    body = export(("a", [span(1, 1)])).SerializeToString()
    assert gunzip(gzip_body(body)) == body
    with pytest.raises(OtlpError, match="larger than 1000 bytes once decompressed"):
        gunzip(gzip_body(b"\0" * 5000), limit=1000)
    with pytest.raises(OtlpError, match="not gzip"):
        gunzip(b"plain")
    with pytest.raises(OtlpError, match="not an OTLP ExportTraceServiceRequest"):
        decode_request(b"\xff\xff\xff")


def test_spans_that_break_the_protocol_are_rejected_alone() -> None:
    good = span(1, 1)
    no_trace = span(1, 2)
    no_trace.trace_id = b"\0" * 16
    short_id = span(1, 3)
    short_id.span_id = b"\1\2"
    backwards = span(1, 4, duration_ms=-1)
    decoded = decode_message(export(("a", [good, no_trace, short_id, backwards])))
    assert [s.span_id for s in decoded.spans] == [hex_span(1)]
    assert decoded.rejected == 3
    assert decoded.problem == "span 'GET /': trace_id must be 16 bytes, not all zero"


def test_a_span_is_bounded_in_size() -> None:
    big = span(1, 1, name="x" * 5000, attributes={f"k{i}": "v" * 2000 for i in range(100)})
    (kept,) = decode_message(export(("a", [big]))).spans
    assert len(kept.name) == MAX_TEXT
    assert len(kept.attributes) == MAX_ATTRIBUTES
    assert kept.dropped_attributes == 100 - MAX_ATTRIBUTES
    assert all(len(str(v)) == MAX_TEXT for v in kept.attributes.values())


def test_the_store_keeps_the_last_spans_evicting_whole_traces_oldest_first() -> None:
    store = TraceStore(max_spans=10)
    for trace in range(1, 5):  # four traces of three spans: 12 > 10
        store.add(spans_of(("a", [span(trace, i, parent=i - 1 if i > 1 else 0)
                                   for i in range(1, 4)])))  # fmt: skip
    assert store.get(hex_trace(1)) is None  # the oldest, evicted whole
    assert [len(t.spans) for t in store] == [3, 3, 3]
    assert (store.counts.spans, store.counts.evicted_traces, store.counts.evicted_spans) == (
        9,
        1,
        3,
    )
    # A trace that receives a span is the freshest: trace 2 survives the next eviction, 3 goes.
    store.add(spans_of(("a", [span(2, 9, parent=1)])))
    store.add(spans_of(("a", [span(5, 1), span(5, 2, parent=1)])))
    assert store.get(hex_trace(3)) is None
    assert store.get(hex_trace(2)) is not None
    assert len(held(store, 2).spans) == 4
    assert store.counts.spans <= 10


def test_a_span_sent_again_replaces_its_copy() -> None:
    store = TraceStore(max_spans=10)
    store.add(spans_of(("a", [span(1, 1, duration_ms=5)])))
    store.add(spans_of(("a", [span(1, 1, duration_ms=7)])))
    (kept,) = held(store, 1).spans.values()
    assert kept.duration_ns == 7_000_000
    assert (store.counts.spans, store.counts.received) == (1, 2)


def test_a_trace_larger_than_the_store_keeps_its_first_spans() -> None:
    store = TraceStore(max_spans=3)
    assert store.add(spans_of(("a", [span(1, i) for i in range(1, 6)]))) == 3
    assert len(held(store, 1).spans) == 3
    assert store.counts.dropped_spans == 2
    with pytest.raises(ValueError, match="at least one span"):
        TraceStore(max_spans=0)


@pytest.fixture(scope="module")
def store() -> TraceStore:
    """Four traces: 1 fast ok (frontend → catalog), 2 slow error (frontend → payment),
    3 a payment-only trace starting later, 4 whose root was not received."""
    store = TraceStore()
    store.add(spans_of(
        ("frontend", [span(1, 1, start_ms=0, duration_ms=20),
                      span(1, 2, parent=1, kind=CLIENT, start_ms=2, duration_ms=10)]),
        ("catalog", [span(1, 3, parent=2, start_ms=3, duration_ms=8, name="GET /items"),
                     span(1, 4, parent=2, start_ms=12, duration_ms=1, name="GET /late")]),
        ("frontend", [span(2, 1, start_ms=100, duration_ms=900, error=True)]),
        ("payment", [span(2, 2, parent=1, start_ms=110, duration_ms=800, error=True,
                          name="POST /pay")]),
        ("payment", [span(3, 1, start_ms=2000, duration_ms=50, name="POST /pay")]),
        ("catalog-v2", [span(3, 2, parent=1, start_ms=2010, duration_ms=5,
                             attributes={"tulle.service": "catalog.default.svc.cluster.local"})]),
        ("cart", [span(4, 5, parent=99, start_ms=3000, duration_ms=1, name="GET /cart")]),
    ))  # fmt: skip
    return store


@pytest.mark.parametrize(
    ("query", "traces"),
    [
        (TraceQuery(), [4, 3, 2, 1]),  # latest start first
        (TraceQuery(limit=2), [4, 3]),
        (TraceQuery(service="payment"), [3, 2]),
        (TraceQuery(service="catalog"), [3, 1]),  # catalog-v2 served catalog in trace 3
        (TraceQuery(service="catalog-v2"), [3]),
        (TraceQuery(error=True), [2]),
        (TraceQuery(error=False), [4, 3, 1]),
        (TraceQuery(min_duration_ns=50_000_000), [3, 2]),
        (TraceQuery(since_ns=BASE_NS + 100_000_000, until_ns=BASE_NS + 2_000_000_000), [3, 2]),
        (TraceQuery(service="payment", error=False), [3]),
        (TraceQuery(service="nobody"), []),
    ],
)
def test_the_list_filters(store: TraceStore, query: TraceQuery, traces: list[int]) -> None:
    assert [s.trace_id for s in store.find(query)] == [hex_trace(t) for t in traces]


def test_a_summary_names_its_root_services_duration_and_status(store: TraceStore) -> None:
    (slow,) = store.find(TraceQuery(error=True))
    assert (slow.root.service, slow.root.name, slow.complete) == ("frontend", "GET /", True)
    assert (slow.span_count, slow.error_count, slow.services) == (2, 2, ("frontend", "payment"))
    assert slow.duration_ns == 900_000_000
    (orphan,) = store.find(TraceQuery(service="cart"))
    assert (orphan.root.name, orphan.complete) == ("GET /cart", False)


def test_a_trace_comes_in_waterfall_order(store: TraceStore) -> None:
    data = trace_json(held(store, 1))
    rows = [(s["service"], s["name"], s["depth"], s["offsetMs"], s["durationMs"])
            for s in data["spans"]]  # fmt: skip
    assert rows == [
        ("frontend", "GET /", 0, 0.0, 20.0),
        ("frontend", "GET /", 1, 2.0, 10.0),
        ("catalog", "GET /items", 2, 3.0, 8.0),
        ("catalog", "GET /late", 2, 12.0, 1.0),
    ]
    assert data["spans"][1]["parentSpanId"] == data["spans"][0]["spanId"]
    assert (data["rootService"], data["spanCount"], data["status"]) == ("frontend", 4, "ok")
    orphan = trace_json(held(store, 4))
    assert orphan["spans"][0]["missingParent"] is True
    assert orphan["complete"] is False
