"""Trace context as the sidecar and the library read and write it (W3C Trace Context, B3 single
and multi), and the sampling decision: an upstream's flag honoured, else the mesh's
probability (checked statistically, within 4.5 standard deviations)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.obs.tracing import (
    CLIENT,
    NOT_SAMPLED,
    SERVER,
    TRACE_HEADERS,
    Span,
    Tracer,
    parse_b3,
    parse_context,
    parse_traceparent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def test_traceparent_of_the_spec_is_read() -> None:
    assert parse_traceparent(TRACEPARENT) == (TRACE, PARENT, 1)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00") == (TRACE, PARENT, 0)
    # A later version: read as 00 where its fields have 00's form, more fields allowed.
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-03-whatever") == (TRACE, PARENT, 1)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{TRACE}-{PARENT}",  # no flags
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has nothing after the flags
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-{PARENT}-01",  # W3C ids are lowercase
        f"00-{TRACE[:-1]}g-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-0x",
        f"00_{TRACE}_{PARENT}_01",
        f"cc-{TRACE}-{PARENT}-01x",
    ],
)
def test_a_bad_traceparent_is_none(value: str) -> None:
    assert parse_traceparent(value) is None


def test_b3_single_forms() -> None:
    full = parse_b3(f"{TRACE}-{PARENT}-1-{'1' * 16}")
    assert full is not None
    assert (full.trace_id, full.parent_id, full.sampled, full.b3_single) == (
        TRACE, PARENT, 1, True
    )  # fmt: skip
    short = parse_b3(f"{TRACE[16:]}-{PARENT}")  # a 64-bit trace id, no decision
    assert short is not None
    assert (short.trace_id, short.sampled) == ("0" * 16 + TRACE[16:], -1)
    debug = parse_b3(f"{TRACE}-{PARENT}-d")
    assert debug is not None
    assert debug.sampled == 1
    deny = parse_b3("0")
    assert deny is not None
    assert (deny.trace_id, deny.sampled) == ("", 0)
    for bad in (
        "x",
        f"{TRACE}-{PARENT}-2",
        f"{TRACE}-short",
        f"{TRACE}-{PARENT}-1-zz",
        "a-b-c-d-e",
    ):
        assert parse_b3(bad) is None, bad


def test_b3_multi_and_precedence() -> None:
    multi = parse_context(
        [("x-b3-traceid", TRACE), ("x-b3-spanid", PARENT.upper()), ("x-b3-sampled", "1")]
    )
    assert multi is not None
    assert (multi.trace_id, multi.parent_id, multi.sampled) == (TRACE, PARENT, 1)
    flags = parse_context([("x-b3-traceid", TRACE), ("x-b3-spanid", PARENT), ("x-b3-flags", "1")])
    assert flags is not None
    assert flags.sampled == 1
    decision = parse_context([("x-b3-sampled", "0")])
    assert decision is not None
    assert (decision.trace_id, decision.sampled) == ("", 0)
    # traceparent wins over B3 when both are valid; a bad one gives way to B3.
    both = parse_context([("b3", f"{'a' * 32}-{'b' * 16}-0"), ("traceparent", TRACEPARENT)])
    assert both is not None
    assert both.trace_id == TRACE
    fallback = parse_context([("traceparent", "junk"), ("b3", f"{'a' * 32}-{'b' * 16}-0")])
    assert fallback is not None
    assert (fallback.trace_id, fallback.sampled) == ("a" * 32, 0)
    state = parse_context(
        [("traceparent", TRACEPARENT), ("tracestate", "a=1"), ("tracestate", "b=2")]
    )
    assert state is not None
    assert state.tracestate == "a=1,b=2"
    assert parse_context([("x-b3-traceid", TRACE)]) is None  # no span id, no decision


header_names = st.sampled_from([*sorted(TRACE_HEADERS), "x-request-id", "host"])
header_values = st.one_of(
    st.text(max_size=80),
    st.builds(lambda a, b, c: f"00-{a}-{b}-{c}", st.text("0123456789abcdef", max_size=33),
              st.text("0123456789abcdefG", max_size=17), st.text("0123456789abcdef", max_size=3)),
)  # fmt: skip


@given(st.lists(st.tuples(header_names, header_values), max_size=8))
def test_malformed_context_never_crashes_and_starts_a_valid_trace(
    headers: list[tuple[str, str]],
) -> None:
    """Whatever the headers, the tracer decides without raising, and a sampled request's
    span and the context it sends on are valid W3C."""
    tracer = Tracer(1.0, random.Random(1))
    span = tracer.start(list(headers), SERVER)
    if span is None or not span.sampled:
        return
    assert parse_traceparent(span.traceparent) == (span.trace_id, span.span_id, 1)
    sent = span.inject(list(headers))
    again = parse_context(sent)
    assert again is not None
    assert (again.trace_id, again.parent_id, again.sampled) == (span.trace_id, span.span_id, 1)


def test_a_sampled_caller_makes_a_child_span_and_the_context_sent_on_is_its() -> None:
    tracer = Tracer(0.0, random.Random(2))  # the mesh samples nothing: the caller decides
    headers = [("traceparent", TRACEPARENT), ("tracestate", "vendor=x"), ("b3", "junk"),
               ("x-b3-spanid", "1" * 16), ("accept", "*/*")]  # fmt: skip
    span = tracer.start(headers, CLIENT)
    assert isinstance(span, Span)
    assert span.sampled
    assert (span.trace_id, span.parent_id, span.kind) == (TRACE, PARENT, CLIENT)
    assert span.span_id != PARENT
    assert len(span.span_id) == 16
    sent = dict(span.inject(headers))
    assert sent["traceparent"] == f"00-{TRACE}-{span.span_id}-01"
    assert sent["tracestate"] == "vendor=x"
    assert (sent["x-b3-traceid"], sent["x-b3-spanid"], sent["x-b3-sampled"]) == (
        TRACE, span.span_id, "1"
    )  # fmt: skip
    assert "b3" not in sent
    assert sent["accept"] == "*/*"


def test_b3_single_callers_are_answered_in_kind() -> None:
    span = Tracer(0.0).start([("b3", f"{TRACE}-{PARENT}-1")], SERVER)
    assert span is not None
    assert span.sampled
    assert dict(span.inject([]))["b3"] == f"{TRACE}-{span.span_id}-1"


def test_an_unsampled_caller_is_honoured_at_any_rate() -> None:
    tracer = Tracer(1.0)
    for headers in (
        [("traceparent", f"00-{TRACE}-{PARENT}-00")],
        [("b3", "0")],
        [("x-b3-traceid", TRACE), ("x-b3-spanid", PARENT), ("x-b3-sampled", "0")],
    ):
        assert tracer.start(headers, SERVER) is None  # passed on as it came


def test_no_context_and_not_sampled_says_so_with_a_constant_header() -> None:
    tracer = Tracer(0.0)
    headers = [("accept", "*/*")]
    assert tracer.start(headers, CLIENT) is NOT_SAMPLED
    assert NOT_SAMPLED.inject(headers) == [("accept", "*/*"), ("b3", "0")]
    again = Tracer(1.0).start(headers, SERVER)  # the next hop: not sampled either
    assert again is None


@pytest.mark.parametrize("order", [1, -1])
def test_a_b3_deny_beside_a_sampled_traceparent_loses_to_it(order: int) -> None:
    """``b3: 0`` alone is answered without parsing; beside other context W3C still wins."""
    headers = [("b3", "0"), ("traceparent", f"00-{TRACE}-{PARENT}-01")][::order]
    span = Tracer(0.0).start(headers, SERVER)
    assert span is not None
    assert (span.trace_id, span.parent_id, span.sampled) == (TRACE, PARENT, True)
    assert Tracer(1.0).start([("b3", " 0 ")], SERVER) is None  # spaced: the parser's answer


def test_a_bad_traceparent_starts_a_new_trace() -> None:
    span = Tracer(1.0).start([("traceparent", "00-nonsense-01")], SERVER)
    assert span is not None
    assert span.sampled
    assert span.parent_id == ""
    assert span.trace_id != "0" * 32


@pytest.mark.parametrize("percent", [1.0, 10.0, 50.0])
def test_sampling_rate_is_the_mesh_setting_within_statistical_bounds(percent: float) -> None:
    """n requests with no context: the number sampled is binomial(n, p); it must lie within
    4.5 standard deviations of n*p (a false failure about once in 150,000 runs)."""
    n, p = 40_000, percent / 100
    tracer = Tracer(p, random.Random())
    sampled = sum(
        1 for _ in range(n) if (span := tracer.start([], CLIENT)) is not None and span.sampled
    )
    bound = 4.5 * math.sqrt(n * p * (1 - p))
    assert abs(sampled - n * p) <= bound, (sampled, n * p, bound)


def test_callers_without_a_decision_are_sampled_at_the_mesh_rate() -> None:
    n, p = 20_000, 0.05
    tracer = Tracer(p, random.Random())
    headers = [("x-b3-traceid", TRACE), ("x-b3-spanid", PARENT)]
    sampled = sum(1 for _ in range(n) if tracer.start(headers, SERVER) is not None)
    assert abs(sampled - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


def test_new_traces_have_valid_distinct_ids() -> None:
    tracer = Tracer(1.0)
    spans = [tracer.start([], CLIENT) for _ in range(1000)]
    ids = set()
    for span in spans:
        assert span is not None
        assert parse_traceparent(span.traceparent) == (span.trace_id, span.span_id, 1)
        ids.add(span.trace_id)
    assert len(ids) == 1000
    child = tracer.start([("traceparent", TRACEPARENT)], SERVER)
    assert child is not None
    assert (child.trace_id, child.parent_id) == (TRACE, PARENT)
    assert parse_traceparent(child.traceparent) == (TRACE, child.span_id, 1)
