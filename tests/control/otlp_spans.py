"""OTLP spans built with opentelemetry-proto, as any exporter sends them: what the trace-store
tests feed the control plane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.message import Message

from tulle.control.traces.otlp_messages import (
    AnyValue,
    ExportTraceServiceRequest,
    KeyValue,
    Resource,
    ResourceSpans,
    ScopeSpans,
    Span,
    Status,
)

BASE_NS = 1_700_000_000 * 10**9
SERVER, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT


def attribute(key: str, value: str | int | bool | float) -> Message:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(
    trace: int,
    span_id: int,
    parent: int = 0,
    name: str = "GET /",
    kind: int = SERVER,
    start_ms: float = 0.0,
    duration_ms: float = 10.0,
    error: bool = False,
    attributes: Mapping[str, str | int | bool | float] | None = None,
    events: Sequence[tuple[str, float]] = (),
) -> Message:
    """A span of trace number ``trace`` (ids are numbers here, hex on the wire), starting
    ``start_ms`` after BASE_NS."""
    start = BASE_NS + int(start_ms * 1e6)
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * 1e6),
        attributes=[attribute(k, v) for k, v in (attributes or {}).items()],
        events=[Span.Event(name=n, time_unix_nano=start + int(at * 1e6)) for n, at in events],
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
    )


def export(*groups: tuple[str, Sequence[Message]]) -> Message:
    """An export request: per (service, spans) one resource."""
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[attribute("service.name", service)]),
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
            for service, spans in groups
        ]
    )


def hex_trace(trace: int) -> str:
    return trace.to_bytes(16, "big").hex()


def hex_span(span_id: int) -> str:
    return span_id.to_bytes(8, "big").hex()
