"""The OTLP encoder against opentelemetry-proto's own decoder, on generated requests: whatever the
record (server or client, gRPC or not, long and non-ASCII strings whose lengths take several
varint bytes, a tracestate, attempts kept in the span or listed, a fallback between them), the
batch decodes (with opentelemetry-proto's messages, as the trace store reads them) to the spans it
describes, a batch written from warm caches is the same bytes as
one written from cold, and each span in a batch is the bytes ``span_bytes`` writes for it alone."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tulle.control.traces.otlp_messages import ExportTraceServiceRequest
from tulle.obs import otlp
from tulle.obs.finished import Finished
from tulle.obs.otlp import export_request, span_bytes
from tulle.obs.span_events import duration_ms
from tulle.obs.tracing import CLIENT, SERVER, Span

TEXT = st.text(st.characters(codec="utf-8"), max_size=300)
HEX16 = st.integers(1, 2**64 - 1).map(lambda n: f"{n:016x}")
HEX32 = st.integers(1, 2**128 - 1).map(lambda n: f"{n:032x}")
SECONDS = st.floats(1.6e9, 1.9e9)


@st.composite
def records(draw: Any) -> Finished:
    kind = draw(st.sampled_from([CLIENT, SERVER]))
    path = draw(st.one_of(
        st.just("/pkg.Service/Method"),
        st.builds(lambda p, q: "/" + p + (f"?{q}" if q else ""), TEXT, TEXT),
    ))  # fmt: skip
    started = draw(SECONDS)
    done = Finished(
        "outbound", draw(st.sampled_from(["GET", "POST", "X-CUSTOM"])), draw(TEXT), path,
        draw(TEXT), draw(TEXT), draw(st.integers(0, 2**40)), draw(st.sampled_from([0, 200, 404, 503])),
        draw(st.sampled_from(["-", "UH", "URX"])), draw(TEXT), draw(TEXT), draw(TEXT), draw(TEXT),
        draw(TEXT), draw(st.integers(1, 5)), draw(st.integers(0, 2**40)), started,
        started + draw(st.floats(0, 100)),
    )  # fmt: skip
    span = Span(draw(HEX32), draw(HEX16), draw(st.one_of(st.just(""), HEX16)), kind,
                draw(st.one_of(st.just(""), TEXT)))  # fmt: skip
    span.grpc_status = draw(st.sampled_from([-1, 0, 14]))
    for step in draw(st.lists(st.sampled_from(["attempt", "retried", "failed", "fallback"]),
                              max_size=4)):  # fmt: skip
        span.attempt_started = draw(SECONDS)
        ended = span.attempt_started + draw(st.floats(0, 10))
        if step == "fallback":
            span.event(ended, "fallback", [("tulle.upstream_cluster", draw(TEXT))])
        elif step == "failed":
            span.attempt(ended, draw(st.integers(1, 3)), draw(TEXT), 0, "connect", draw(TEXT), True)
        else:
            span.attempt(ended, 1, draw(TEXT), 200, "", "", step == "retried")
    done.span = span
    return done


def _expected_events(span: Span) -> list[tuple[str, int, float | None]]:
    out: list[tuple[str, int, float | None]] = []
    for event in span.all_events():
        if isinstance(event, tuple):
            out.append((event[1], int(event[0] * 1e9), None))
        else:
            out.append(("attempt", int(event.ended * 1e9), duration_ms(event.started, event.ended)))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=6))
def test_generated_spans_decode_as_the_records_say_from_cold_and_warm_caches(
    batch: list[Finished],
) -> None:
    for cache in (
        otlp._SHAPES,
        otlp._NAMES,
        otlp._ATTEMPTS,
        otlp._ANSWERED,
        otlp._RECEIVED,
        otlp._SENT,
    ):
        cache.clear()
    cold = export_request(batch, [("service.name", "shop")])
    warm = export_request(batch, [("service.name", "shop")])
    assert warm == cold
    decoded = ExportTraceServiceRequest.FromString(cold)
    spans = decoded.resource_spans[0].scope_spans[0].spans
    assert len(spans) == len(batch)
    for done, got in zip(batch, spans, strict=True):
        span = done.span
        assert span is not None
        assert (
            got.SerializeToString()
            == ExportTraceServiceRequest.FromString(
                export_request([done], [("service.name", "shop")])
            )
            .resource_spans[0]
            .scope_spans[0]
            .spans[0]
            .SerializeToString()
        )
        assert type(got).FromString(span_bytes(done)) == got
        assert (got.trace_id.hex(), got.span_id.hex()) == (span.trace_id, span.span_id)
        assert got.parent_span_id.hex() == span.parent_id
        assert got.trace_state == span.tracestate
        assert got.kind == span.kind
        assert got.start_time_unix_nano == int(done.started * 1e9)
        assert got.end_time_unix_nano == int(done.ended * 1e9)
        attributes = {kv.key: kv.value for kv in got.attributes}
        path, _, query = done.path.partition("?")
        if span.kind == CLIENT:
            assert attributes["url.full"].string_value == f"http://{done.authority}{done.path}"
        else:
            assert attributes["url.path"].string_value == path
            assert ("url.query" in attributes) == bool(query)
        assert attributes["http.request.body.size"].int_value == done.received
        assert attributes["http.response.body.size"].int_value == done.sent
        if done.request_id:
            ids = attributes["http.request.header.x-request-id"].array_value.values
            assert [v.string_value for v in ids] == [done.request_id]
        events = [(e.name, e.time_unix_nano,
                   next((kv.value.double_value for kv in e.attributes
                         if kv.key == "tulle.duration_ms"), None))
                  for e in got.events]  # fmt: skip
        assert events == _expected_events(span)
