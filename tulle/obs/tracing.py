"""Trace context and the sampling decision, as the sidecar and the library make them per request
(Envoy's way: a server span for each call a workload serves, a client span for each call it
makes through the mesh).

A request's context comes in W3C Trace Context (``traceparent``, ``tracestate``) or B3, single
(``b3``) or multi (``x-b3-traceid``, ``x-b3-spanid``, ``x-b3-parentspanid``,
``x-b3-sampled``, ``x-b3-flags``); ``traceparent`` wins when both are there and valid.
Malformed context never fails a request: it is ignored, and the request starts a new trace. An
upstream caller's sampled flag is honoured (``1`` traces, ``0`` does not); without one the
request is sampled at random with the mesh's probability.

For speed, nothing is made for a request that is not sampled: :meth:`Tracer.start` returns
None (the context it came with, if any, passes on untouched, sampled flag and all), or
:data:`NOT_SAMPLED` when it came with no context, whose only effect is the ``b3: 0`` header
(a constant: no id is made) so that the next hops honour the decision instead of sampling the
same request again. A sampled request gets a :class:`Span`: its ids, and what happened to it
(attempts, a fallback) as events. The span's times and attributes come from the request's
:class:`~tulle.obs.finished.Finished` record, read when the span is exported, off the request
path (:mod:`tulle.obs.trace_export`)."""

from __future__ import annotations

import random
from typing import Final

from tulle.obs.span_events import Attempt, AttributeValue, Event

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
B3: Final = "b3"
B3_TRACE_ID: Final = "x-b3-traceid"
B3_SPAN_ID: Final = "x-b3-spanid"
B3_PARENT_ID: Final = "x-b3-parentspanid"
B3_SAMPLED: Final = "x-b3-sampled"
B3_FLAGS: Final = "x-b3-flags"
TRACE_HEADERS: Final = frozenset(
    {TRACEPARENT, TRACESTATE, B3, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_ID, B3_SAMPLED, B3_FLAGS}
)
"""Every header that carries trace context: a sampled hop replaces them all with its own."""

SERVER: Final = 2  # OTLP's SpanKind values
CLIENT: Final = 3

_HEX: Final = "0123456789abcdef"
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_B3_DENY: Final = (B3, "0")
_B3_SAMPLED: Final = (B3_SAMPLED, "1")
_MAX_TRACESTATE: Final = 512  # W3C: a vendor may drop a longer one


def _hex(text: str, size: int) -> bool:
    """Whether ``text`` is ``size`` lowercase hex digits (W3C asks for lowercase)."""
    return len(text) == size and not text.strip(_HEX)


def _b3_hex(text: str, size: int) -> bool:
    """B3's ids: hex, either case (Zipkin accepts both)."""
    return len(text) == size and not text.lower().strip(_HEX)


class Incoming:
    """The context a request came with: ``trace_id`` (32 hex digits; empty when the headers
    carry only a sampling decision), ``parent_id`` (the caller's span, 16 hex digits),
    ``sampled`` (1, 0, or -1: the caller left the decision to us), ``tracestate`` (W3C's,
    passed on), ``b3_single`` (the caller used the ``b3`` header: it is answered in kind)."""

    __slots__ = ("b3_single", "parent_id", "sampled", "trace_id", "tracestate")

    def __init__(
        self,
        trace_id: str,
        parent_id: str,
        sampled: int,
        tracestate: str = "",
        b3_single: bool = False,
    ) -> None:
        self.trace_id, self.parent_id, self.sampled = trace_id, parent_id, sampled
        self.tracestate, self.b3_single = tracestate, b3_single


def parse_traceparent(value: str) -> tuple[str, str, int] | None:
    """W3C ``traceparent`` (``00-<trace id>-<parent id>-<flags>``): trace id, parent id and
    the sampled flag (0 or 1), or None when it is not valid (all-zero ids, version ff, a
    version 00 header with anything after the flags). A later version is read as 00 where its
    first four fields have 00's form, as the spec asks."""
    value = value.strip()
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if not _hex(version, 2) or version == "ff":
        return None
    if len(value) > 55 and (version == "00" or value[55] != "-"):
        return None
    if not (_hex(trace_id, 32) and _hex(parent_id, 16) and _hex(flags, 2)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, int(flags, 16) & 1


def _b3_sampled(value: str) -> int:
    value = value.strip().lower()
    if value in ("1", "d", "true"):
        return 1
    if value in ("0", "false"):
        return 0
    return -1


def parse_b3(value: str) -> Incoming | None:
    """The single ``b3`` header (``<trace id>-<span id>[-<sampled>[-<parent id>]]``, or only a
    decision: ``0``, ``1``, ``d``); None when it is neither."""
    value = value.strip()
    if len(value) == 1:
        sampled = _b3_sampled(value)
        return None if sampled < 0 else Incoming("", "", sampled, b3_single=True)
    parts = value.split("-")
    if not 2 <= len(parts) <= 4:
        return None
    trace_id, span_id = parts[0], parts[1]
    if not (_b3_hex(trace_id, 32) or _b3_hex(trace_id, 16)) or not _b3_hex(span_id, 16):
        return None
    sampled = -1
    if len(parts) >= 3:
        sampled = _b3_sampled(parts[2])
        if sampled < 0:
            return None
    if len(parts) == 4 and not _b3_hex(parts[3], 16):
        return None
    trace_id = trace_id.lower().rjust(32, "0")
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return Incoming(trace_id, span_id.lower(), sampled, b3_single=True)


def parse_context(headers: list[tuple[str, str]]) -> Incoming | None:
    """The trace context in ``headers`` (lowercase names), or None when they carry none that
    is valid: W3C first, then ``b3``, then the multi-header B3 form. Never raises."""
    traceparent = tracestate = b3 = trace_id = span_id = sampled = flags = None
    for name, value in headers:
        if name not in TRACE_HEADERS:
            continue
        if name == TRACEPARENT:
            traceparent = traceparent or value
        elif name == TRACESTATE:  # several are one list, joined with commas (W3C)
            tracestate = value if tracestate is None else f"{tracestate},{value}"
        elif name == B3:
            b3 = b3 or value
        elif name == B3_TRACE_ID:
            trace_id = trace_id or value
        elif name == B3_SPAN_ID:
            span_id = span_id or value
        elif name == B3_SAMPLED:
            sampled = sampled or value
        elif name == B3_FLAGS:
            flags = flags or value
    if traceparent is not None:
        parsed = parse_traceparent(traceparent)
        if parsed is not None:
            state = tracestate or ""
            if len(state) > _MAX_TRACESTATE:
                state = ""
            return Incoming(parsed[0], parsed[1], parsed[2], state)
    if b3 is not None:
        single = parse_b3(b3)
        if single is not None:
            return single
    decision = -1
    if flags is not None and flags.strip() == "1":  # debug: sampled
        decision = 1
    elif sampled is not None:
        decision = _b3_sampled(sampled)
    if trace_id is not None and span_id is not None:
        trace_id, span_id = trace_id.strip(), span_id.strip()
        if (_b3_hex(trace_id, 32) or _b3_hex(trace_id, 16)) and _b3_hex(span_id, 16):
            trace_id = trace_id.lower().rjust(32, "0")
            if trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
                return Incoming(trace_id, span_id.lower(), decision)
    if decision >= 0:  # a decision alone
        return Incoming("", "", decision)
    return None


class Span:
    """A sampled request's span: ``trace_id``, ``span_id`` and ``parent_id`` (empty for a
    trace's root) as hex, ``kind`` (:data:`SERVER` or :data:`CLIENT`), the W3C
    ``tracestate`` passed on, and what happened to it: each attempt of a client span
    (:meth:`attempt`) and anything else, a fallback (:meth:`event`); :meth:`all_events` lists
    them. ``grpc_status`` is the gRPC status of the
    answer (-1: not gRPC, or none), set when the request is recorded. ``sampled`` is False only
    for :data:`NOT_SAMPLED`."""

    __slots__ = (
        "attempt_started",
        "b3_single",
        "events",
        "first_ended",
        "first_endpoint",
        "first_error",
        "first_reason",
        "first_started",
        "first_status",
        "grpc_status",
        "kind",
        "parent_id",
        "sampled",
        "span_id",
        "trace_id",
        "tracestate",
    )  # fmt: skip

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str,
        kind: int,
        tracestate: str = "",
        b3_single: bool = False,
        sampled: bool = True,
    ) -> None:
        self.trace_id, self.span_id, self.parent_id = trace_id, span_id, parent_id
        self.kind, self.tracestate, self.b3_single, self.sampled = (
            kind, tracestate, b3_single, sampled
        )  # fmt: skip
        # The first attempt, when it was the request's only one and the first thing that
        # happened to it (the usual), is kept in these fields: no object is made for it.
        self.first_started = self.first_ended = 0.0
        self.first_endpoint = self.first_error = self.first_reason = ""
        self.first_status = 0
        self.events: list[Attempt | Event] | None = None  # the others, in order, when any
        self.grpc_status = -1
        self.attempt_started = 0.0  # when the attempt under way started

    def __repr__(self) -> str:
        return f"Span({self.trace_id}/{self.span_id} parent {self.parent_id or '-'})"

    @property
    def traceparent(self) -> str:
        """The W3C header that makes this span the parent of the next hop's."""
        return f"00-{self.trace_id}-{self.span_id}-01"

    def attempt(
        self,
        ended: float,
        number: int,
        endpoint: str,
        status: int,
        error: str,
        reason: str,
        retried: bool,
    ) -> None:
        """An attempt of the request ended (started at ``attempt_started``; see
        :class:`Attempt` for the rest)."""
        if number == 1 and not retried and not self.first_ended and self.events is None:
            self.first_started, self.first_ended = self.attempt_started, ended
            self.first_endpoint, self.first_status = endpoint, status
            self.first_error, self.first_reason = error, reason
            return
        started = self.attempt_started
        self._add(Attempt(ended, started, number, endpoint, status, error, reason, retried))

    def event(self, when: float, name: str, attributes: list[tuple[str, AttributeValue]]) -> None:
        """Something else that happened to the request (a fallback)."""
        self._add((when, name, attributes))

    def _add(self, event: Attempt | Event) -> None:
        if self.events is None:
            self.events = [event]
        else:
            self.events.append(event)

    def first_attempt(self) -> Attempt | None:
        """The first attempt when it is kept in the span's own fields, else None."""
        if not self.first_ended:
            return None
        return Attempt(self.first_ended, self.first_started, 1, self.first_endpoint,
                       self.first_status, self.first_error, self.first_reason, False)  # fmt: skip

    def all_events(self) -> list[Attempt | Event]:
        """Every attempt and event, in the order they happened."""
        first = self.first_attempt()
        found: list[Attempt | Event] = [] if first is None else [first]
        if self.events is not None:
            found += self.events
        return found

    def inject(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``headers`` with this span as the context they carry: for a sampled span, every
        trace header replaced with W3C ``traceparent`` (and the ``tracestate`` that came in),
        B3 multi, and the ``b3`` header when the caller used it; for :data:`NOT_SAMPLED`,
        ``b3: 0`` added. ``headers`` itself, added to, when nothing was removed (the usual:
        a request that starts a trace); else a new list."""
        if not self.sampled:
            headers.append(_B3_DENY)
            return headers
        for header in headers:
            if header[0] in TRACE_HEADERS:
                headers = [h for h in headers if h[0] not in TRACE_HEADERS]
                break
        trace_id, span_id = self.trace_id, self.span_id
        headers.append((TRACEPARENT, f"00-{trace_id}-{span_id}-01"))
        if self.tracestate:
            headers.append((TRACESTATE, self.tracestate))
        headers.append((B3_TRACE_ID, trace_id))
        headers.append((B3_SPAN_ID, span_id))
        headers.append(_B3_SAMPLED)
        if self.b3_single:
            headers.append((B3, f"{trace_id}-{span_id}-1"))
        return headers


NOT_SAMPLED: Final = Span("", "", "", CLIENT, sampled=False)
"""A request that came with no context and is not sampled: only ``b3: 0`` is added."""


class Tracer:
    """The sampling decision and the ids of new spans. ``fraction`` is the share of requests
    with no decision from their caller that are sampled (the Mesh's ``tracing.sampling``
    percent / 100)."""

    __slots__ = ("bits", "fraction", "random")

    def __init__(self, fraction: float, chance: random.Random | None = None) -> None:
        self.fraction = fraction
        chance = chance or random.Random()
        self.random = chance.random
        self.bits = chance.getrandbits

    def start(self, headers: list[tuple[str, str]], kind: int) -> Span | None:
        """The span of a request with ``headers`` (``kind``: SERVER or CLIENT): a Span when
        it is sampled, :data:`NOT_SAMPLED` or None when not (see the module)."""
        found: tuple[str, str] | None = None
        for header in headers:
            if header[0] in TRACE_HEADERS:
                if found is not None:  # several: parse them all
                    return self._continue(parse_context(headers), kind)
                found = header
        if found is not None:
            if found == _B3_DENY:  # what an unsampled hop sends: nothing to parse
                return None
            return self._continue(parse_context(headers), kind)
        if self.random() >= self.fraction:
            return NOT_SAMPLED
        return self._root(kind, False)

    def _root(self, kind: int, b3_single: bool) -> Span:
        """A new trace's first span: 24 random bytes as hex, the trace id and the span id (one
        draw and one conversion: formatting two numbers cost four times as much)."""
        ids = self.bits(192).to_bytes(24, "little").hex()
        return Span(ids[:32], ids[32:], "", kind, b3_single=b3_single)

    def _span_id(self) -> str:
        return self.bits(64).to_bytes(8, "little").hex()

    def _continue(self, incoming: Incoming | None, kind: int) -> Span | None:
        if incoming is None:  # malformed: a new trace, decided here
            if self.random() >= self.fraction:
                return NOT_SAMPLED
            return self._root(kind, False)
        sampled = incoming.sampled
        if sampled < 0:
            sampled = 1 if self.random() < self.fraction else 0
            if not sampled:
                return None if incoming.trace_id else NOT_SAMPLED
        if not sampled:
            return None  # the caller's headers say so already
        if not incoming.trace_id:  # sampled, with no ids: a new trace
            return self._root(kind, incoming.b3_single)
        return Span(incoming.trace_id, self._span_id(), incoming.parent_id, kind,
                    incoming.tracestate, incoming.b3_single)  # fmt: skip
