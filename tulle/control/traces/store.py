"""The trace store: the last N spans in memory, grouped by trace, with the queries of the API.

Bounded by spans, not traces: past ``max_spans`` the trace that has gone longest without a new
span is evicted whole (a trace still receiving spans is kept; a half trace is worth less than
none), until the store is back within its bound. A trace alone larger than the bound keeps its
first ``max_spans`` spans and counts the rest as dropped. A span sent again (an exporter's retry)
replaces the copy it has. Everything runs on the control plane's event loop: no lock."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from tulle.control.traces.spans import Span

DEFAULT_MAX_SPANS: Final = 20_000
SERVED: Final = "tulle.service"
"""The span attribute naming the mesh service a span served (the data plane sets it)."""
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1_000


class Trace:
    """The spans of one trace the store holds, and their summary (kept up to date)."""

    __slots__ = ("_summary", "spans", "trace_id")

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.spans: dict[str, Span] = {}
        self._summary: TraceSummary | None = None

    def add(self, span: Span) -> bool:
        """Keep ``span``; True when it is new (not a copy of one already kept)."""
        new = span.span_id not in self.spans
        self.spans[span.span_id] = span
        self._summary = None
        return new

    @property
    def summary(self) -> TraceSummary:
        """What the trace list shows of this trace."""
        if self._summary is None:
            self._summary = TraceSummary.of(self.trace_id, self.spans.values())
        return self._summary

    def roots(self) -> list[Span]:
        """Spans with no parent in the trace (the root, and any whose parent was not
        received), earliest first."""
        return sorted(
            (s for s in self.spans.values() if s.parent_span_id not in self.spans),
            key=lambda s: (s.start_ns, s.span_id),
        )


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One trace as the list shows it."""

    trace_id: str
    root: Span  # the root span, or the earliest span whose parent was not received
    complete: bool  # the root span (no parent at all) was received
    start_ns: int
    end_ns: int
    span_count: int
    error_count: int
    services: tuple[str, ...]  # the spans' service.name
    served: frozenset[str] = frozenset()  # the mesh services its spans served (catalog)

    @property
    def duration_ns(self) -> int:
        """From the first span's start to the last span's end."""
        return self.end_ns - self.start_ns

    @property
    def error(self) -> bool:
        """Whether any span of the trace failed."""
        return self.error_count > 0

    @classmethod
    def of(cls, trace_id: str, spans: Iterable[Span]) -> TraceSummary:
        """The summary of ``spans`` (at least one)."""
        spans = list(spans)
        ids = {s.span_id for s in spans}
        orphans = [s for s in spans if s.parent_span_id not in ids]
        roots = [s for s in orphans if not s.parent_span_id]
        root = min(roots or orphans or spans, key=lambda s: (s.start_ns, s.span_id))
        return cls(
            trace_id=trace_id,
            root=root,
            complete=bool(roots),
            start_ns=min(s.start_ns for s in spans),
            end_ns=max(s.end_ns for s in spans),
            span_count=len(spans),
            error_count=sum(s.error for s in spans),
            services=tuple(sorted({s.service for s in spans})),
            served=frozenset(filter(None, (_served(s) for s in spans))),
        )


def _served(span: Span) -> str:
    """The mesh service a span served, by its short name: ``catalog`` for a span of
    catalog-v1 whose ``tulle.service`` is ``catalog.default.svc.cluster.local``."""
    host = span.attributes.get(SERVED)
    return host.split(".", 1)[0] if isinstance(host, str) else ""


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """The filters of a trace list: every one given must hold."""

    service: str | None = None  # a span of the trace is this service's (or served it)
    error: bool | None = None  # True: traces with a failed span; False: traces without
    min_duration_ns: int = 0
    since_ns: int | None = None  # the trace started at or after
    until_ns: int | None = None  # the trace started at or before
    limit: int = DEFAULT_LIMIT

    def matches(self, summary: TraceSummary) -> bool:
        """Whether ``summary``'s trace passes every filter."""
        return (
            (
                self.service is None
                or self.service in summary.services
                or self.service in summary.served
            )
            and (self.error is None or summary.error == self.error)
            and summary.duration_ns >= self.min_duration_ns
            and (self.since_ns is None or summary.start_ns >= self.since_ns)
            and (self.until_ns is None or summary.start_ns <= self.until_ns)
        )


@dataclass
class StoreCounts:
    """What the store holds and what it let go, for the API and the metrics."""

    traces: int = 0
    spans: int = 0
    received: int = 0  # spans accepted since the start (copies included)
    evicted_traces: int = 0
    evicted_spans: int = 0
    dropped_spans: int = 0  # spans of a trace already as large as the whole store


class TraceStore:
    """The last ``max_spans`` spans, by trace (see the module's docstring)."""

    def __init__(self, max_spans: int = DEFAULT_MAX_SPANS) -> None:
        if max_spans < 1:
            raise ValueError(f"the trace store must hold at least one span, not {max_spans}")
        self.max_spans = max_spans
        self._traces: OrderedDict[str, Trace] = OrderedDict()  # least recently added to first
        self.counts = StoreCounts()

    def add(self, spans: Iterable[Span]) -> int:
        """Keep ``spans``, evicting the stalest traces past the bound; returns how many were
        kept (the others belonged to a trace as large as the whole store)."""
        kept = 0
        counts = self.counts
        for span in spans:
            trace = self._traces.get(span.trace_id)
            if trace is None:
                trace = self._traces[span.trace_id] = Trace(span.trace_id)
            else:
                self._traces.move_to_end(span.trace_id)
            if span.span_id not in trace.spans and len(trace.spans) >= self.max_spans:
                counts.dropped_spans += 1
                continue
            if trace.add(span):
                counts.spans += 1
            counts.received += 1
            kept += 1
            self._evict(keep=span.trace_id)
        counts.traces = len(self._traces)
        return kept

    def _evict(self, keep: str) -> None:
        counts = self.counts
        while counts.spans > self.max_spans:
            trace_id = next(iter(self._traces))
            if trace_id == keep:  # the trace being added to is the only one left
                break
            trace = self._traces.pop(trace_id)
            counts.spans -= len(trace.spans)
            counts.evicted_spans += len(trace.spans)
            counts.evicted_traces += 1

    def __len__(self) -> int:
        return len(self._traces)

    def __iter__(self) -> Iterator[Trace]:
        return iter(self._traces.values())

    def get(self, trace_id: str) -> Trace | None:
        """The trace with that id (lowercase hex), if the store holds it."""
        return self._traces.get(trace_id)

    def find(self, query: TraceQuery) -> list[TraceSummary]:
        """The latest-starting traces that pass ``query``, latest first, at most its limit."""
        matching = (t.summary for t in self._traces.values() if query.matches(t.summary))
        return heapq.nlargest(query.limit, matching, key=lambda s: (s.start_ns, s.trace_id))
