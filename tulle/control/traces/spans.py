"""A stored span: what the trace store keeps of an OTLP span, with the sizes that bound it.

A span's size is bounded here (attributes, events, text lengths), so the store's bound in spans
is a bound in memory: an exporter cannot grow the control plane with one huge span."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

MAX_ATTRIBUTES: Final = 64
"""Attributes kept per span (and per event); the rest are counted in ``dropped_attributes``."""
MAX_EVENTS: Final = 32
"""Events kept per span (a retried call has an event per attempt; 32 is plenty)."""
MAX_TEXT: Final = 512
"""Characters kept of a name, an attribute value or a status message; longer ones are cut."""
MAX_ARRAY: Final = 32
"""Items kept of an array attribute value."""

KINDS: Final = ("unspecified", "internal", "server", "client", "producer", "consumer")
"""OTLP's ``SpanKind`` values by number, as the API names them."""

Value = str | bool | int | float | list[Any] | dict[str, Any] | None
"""An attribute value as JSON shows it (OTLP's ``AnyValue``)."""


def cut(text: str, limit: int = MAX_TEXT) -> str:
    """``text``, cut to ``limit`` characters (marked with an ellipsis)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """Something that happened during a span (a retry, an exception)."""

    name: str
    time_ns: int
    attributes: dict[str, Value]


@dataclass(frozen=True, slots=True)
class Span:
    """One span as the store keeps it: ids in lowercase hex, times in Unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    name: str
    kind: str  # one of KINDS
    service: str  # the resource's service.name
    start_ns: int
    end_ns: int
    status: str  # "unset", "ok" or "error"
    status_message: str = ""
    attributes: dict[str, Value] = field(default_factory=dict)
    resource: dict[str, Value] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()
    scope: str = ""  # the instrumentation scope's name
    dropped_attributes: int = 0
    dropped_events: int = 0

    @property
    def duration_ns(self) -> int:
        """How long the span lasted."""
        return self.end_ns - self.start_ns

    @property
    def error(self) -> bool:
        """Whether the span says it failed (status ERROR)."""
        return self.status == "error"
