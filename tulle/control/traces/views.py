"""The trace store's answers as JSON: a trace list and one trace ready for a waterfall.

Times are Unix seconds (``start``, a float to the microsecond) and milliseconds (``durationMs``,
``offsetMs`` from the trace's start), never raw nanoseconds: JSON numbers past 2**53 lose
digits in a browser. docs/observability.md ("The query API") documents every field."""

from __future__ import annotations

from typing import Any

from tulle.control.traces.spans import Span, SpanEvent
from tulle.control.traces.store import StoreCounts, Trace, TraceSummary


def _ms(nanoseconds: int) -> float:
    return round(nanoseconds / 1e6, 3)


def _seconds(nanoseconds: int) -> float:
    return round(nanoseconds / 1e9, 6)


def summary_json(summary: TraceSummary) -> dict[str, Any]:
    """A trace as the list shows it."""
    root = summary.root
    return {
        "traceId": summary.trace_id,
        "rootService": root.service,
        "rootName": root.name,
        "complete": summary.complete,
        "start": _seconds(summary.start_ns),
        "durationMs": _ms(summary.duration_ns),
        "spanCount": summary.span_count,
        "errorCount": summary.error_count,
        "status": "error" if summary.error else "ok",
        "services": list(summary.services),
    }


def counts_json(counts: StoreCounts, max_spans: int) -> dict[str, Any]:
    """What the store holds and let go."""
    return {
        "traces": counts.traces,
        "spans": counts.spans,
        "maxSpans": max_spans,
        "received": counts.received,
        "evictedTraces": counts.evicted_traces,
        "evictedSpans": counts.evicted_spans,
        "droppedSpans": counts.dropped_spans,
    }


def trace_json(trace: Trace) -> dict[str, Any]:
    """A trace with its spans in waterfall order: depth first from the root, each span's
    children by start time; a span whose parent was not received starts a tree of its own
    (``missingParent``)."""
    summary = trace.summary
    children: dict[str, list[Span]] = {}
    for span in trace.spans.values():
        children.setdefault(span.parent_span_id, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda s: (s.start_ns, s.span_id))
    ordered: list[dict[str, Any]] = []
    stack = [(root, 0) for root in reversed(trace.roots())]
    while stack:
        span, depth = stack.pop()
        ordered.append(_span_json(span, depth, summary.start_ns, span.parent_span_id != ""
                                  and span.parent_span_id not in trace.spans))  # fmt: skip
        stack.extend((child, depth + 1) for child in reversed(children.get(span.span_id, [])))
    return {**summary_json(summary), "spans": ordered}


def _span_json(span: Span, depth: int, trace_start: int, missing_parent: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "spanId": span.span_id,
        "parentSpanId": span.parent_span_id,
        "depth": depth,
        "service": span.service,
        "name": span.name,
        "kind": span.kind,
        "start": _seconds(span.start_ns),
        "offsetMs": _ms(span.start_ns - trace_start),
        "durationMs": _ms(span.duration_ns),
        "status": span.status,
        "statusMessage": span.status_message,
        "attributes": span.attributes,
        "events": [_event_json(e, span.start_ns) for e in span.events],
        "resource": span.resource,
    }
    if missing_parent:
        data["missingParent"] = True
    if span.dropped_attributes or span.dropped_events:
        data["dropped"] = {"attributes": span.dropped_attributes, "events": span.dropped_events}
    return data


def _event_json(event: SpanEvent, span_start: int) -> dict[str, Any]:
    return {
        "name": event.name,
        "offsetMs": _ms(event.time_ns - span_start),
        "attributes": event.attributes,
    }
