"""Spans as OTLP protobuf: a batch of finished, sampled requests becomes the bytes of one
``ExportTraceServiceRequest`` (opentelemetry-proto's ``collector/trace/v1``), what ``POST
/v1/traces`` (OTLP/HTTP) and ``TraceService/Export`` (OTLP/gRPC) carry. This runs in the
exporter's thread, never on the request path.

The wire format is written here directly (:mod:`tulle.obs.otlp_wire`), with the field numbers
of opentelemetry-proto's messages: building its message objects cost about 60 µs a span in the
pure-Python build, more than the rest of a traced request; these bytes cost a fraction of that,
and the sidecar does not load the OTLP modules at all. What repeats from span to span is
written once and kept (bounded caches): a span's name, its repeating attributes, status and
flags as one block per distinct set; an attempt event's attributes but its duration. A batch is
gathered as one list of pieces, every length written before its message, and joined once: no
message is copied into the one around it. The tests
decode every body with opentelemetry-proto itself (tests/obs/test_trace_export.py), so the
encoding is checked against the real schema.

Attributes follow OpenTelemetry's semantic conventions for HTTP spans (stable) and RPC spans
(``rpc.system.name``, ``rpc.method`` as ``package.Service/Method``, ``rpc.response.
status_code``; with the older ``rpc.system``, ``rpc.service`` and ``rpc.grpc.status_code``
beside them, which tools still read), plus the mesh's own under ``tulle.``: the response
flags and the reason of an answer the mesh made (what ``x-tulle-error`` says), the route, the
upstream cluster, endpoint and workload, the attempts, and the peer's SPIFFE id from mTLS."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from tulle.obs.finished import Finished
from tulle.obs.otlp_wire import (
    DOUBLE,
    Attributes,
    StringHeads,
    any_bytes,
    field,
    key_values,
    nested,
    remember,
    varint,
    varint_size,
)
from tulle.obs.span_events import Attempt, Event, attempt_attributes, duration_ms
from tulle.obs.tracing import CLIENT, Span

SCOPE: Final = "tulle"

GRPC_CODES: Final = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip
# A server's own failures (semantic conventions, gRPC server spans); a client's: any non-OK.
_GRPC_SERVER_ERRORS: Final = frozenset({2, 4, 12, 13, 14, 15})
STATUS_ERROR: Final = 2  # OTLP's Status.StatusCode STATUS_CODE_ERROR

# Field keys ((number << 3) | wire type) of the messages written here.
_SPAN_ATTRIBUTE: Final = b"\x4a"  # Span.attributes = 9
_EVENT_ATTRIBUTE: Final = b"\x1a"  # Event.attributes = 3
_RESOURCE_ATTRIBUTE: Final = b"\x0a"  # Resource.attributes = 1
# Span.kind = 6 (a varint), then start_time_unix_nano = 7 and end_time_unix_nano = 8, each a
# key and a fixed64: one pack
_KIND_AND_TIMES: Final = struct.Struct("<BBBQBQ")
_EVENT_TIME: Final = struct.Struct("<BQ")  # Event.time_unix_nano = 1, fixed64
# An attempt's duration (a double, last of its attributes) and then its Event.time_unix_nano:
# one pack (protobuf takes a message's fields in any order).
_DURATION_AND_TIME: Final = struct.Struct("<dBQ")
# Span.flags = 16 (fixed32): W3C trace flags (sampled), and that the parent's context is known
# and remote (every parent here came in a request's headers).
_ROOT_FLAGS: Final = b"\x85\x01" + struct.pack("<I", 0x101)
_CHILD_FLAGS: Final = b"\x85\x01" + struct.pack("<I", 0x301)
_DURATION: Final = any_bytes(_EVENT_ATTRIBUTE, "tulle.duration_ms", b"\x21" + DOUBLE.pack(0))[:-8]
"""An attempt's ``tulle.duration_ms`` attribute but its double's eight bytes."""


def _host_port(authority: str) -> tuple[str, int | None]:
    """Host and port of ``host[:port]`` or ``[v6][:port]`` (a bare IPv6 address has no port)."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif authority.count(":") == 1:
        host, _, port = authority.partition(":")
    else:
        host, port = authority, ""
    return host, int(port) if port.isdigit() else None


_SHAPES: Final[dict[tuple[object, ...], tuple[bytes, bytes]]] = {}
"""What a span's repeating properties write (its kind, method, host, status, peer, route,
cluster, endpoint, reason, principals, whether it has a parent...): its repeating attributes,
and its status and flags; written once per distinct set: one lookup instead of ~15 encodings.
Emptied when it reaches :data:`~tulle.obs.otlp_wire.CACHE_MAX` (peers are many)."""
_NAMES: Final[dict[str, dict[str, tuple[bytes, bool]]]] = {}
"""A span's name field by method, then path; and whether the path has a gRPC method's form."""
_ATTEMPTS: Final[dict[tuple[int, str, int, str, str, bool], bytes]] = {}
"""An attempt event up to its duration's value (:func:`_attempt_head`), by what repeats (its
number, endpoint, status or failure, whether it is retried)."""
_ANSWERED: Final[dict[str, dict[int, bytes]]] = {}
"""The same for a first attempt that was answered, by endpoint and then status."""
_RECEIVED: Final[dict[int, bytes]] = {}
"""The ``http.request.body.size`` attribute by its value."""
_SENT: Final[dict[int, bytes]] = {}
"""The ``http.response.body.size`` attribute by its value."""
_URL_FULL: Final = StringHeads(_SPAN_ATTRIBUTE, "url.full")
_URL_PATH: Final = StringHeads(_SPAN_ATTRIBUTE, "url.path")
_URL_QUERY: Final = StringHeads(_SPAN_ATTRIBUTE, "url.query")
_REQUEST_ID: Final = StringHeads(_SPAN_ATTRIBUTE, "http.request.header.x-request-id", array=True)


def _shape(done: Finished, span: Span, client: bool, grpc_path: str) -> tuple[bytes, bytes]:
    """The span's repeating attributes, and its status and flags (see :data:`_SHAPES`)."""
    key = (
        client, done.method, done.authority, done.status, done.upstream, done.source_ip,
        done.attempts, done.flag, done.reason, done.route, done.cluster, done.upstream_workload,
        done.peer_principal, done.caller, done.service, span.grpc_status, grpc_path,
        bool(span.parent_id),
    )  # fmt: skip
    found = _SHAPES.get(key)
    if found is None:
        block = Attributes(_SPAN_ATTRIBUTE)
        _repeated_attributes(done, block, client, grpc_path)
        flags = _CHILD_FLAGS if span.parent_id else _ROOT_FLAGS
        found = (block.encoded(), _status(done) + flags)
        remember(_SHAPES, key, found)
    return found


def _repeated_attributes(done: Finished, out: Attributes, client: bool, grpc_path: str) -> None:
    """The attributes :data:`_SHAPES` keeps: all but the URL, the sizes and the request id."""
    span = done.span
    assert span is not None
    host, port = _host_port(done.authority)
    out.string("http.request.method", done.method)
    if not client:
        out.string("url.scheme", "http")
    if host:
        out.string("server.address", host)
    if port is not None:
        out.integer("server.port", port)
    if done.status:
        out.integer("http.response.status_code", done.status)
    if client:
        if done.upstream:
            peer, peer_port = _host_port(done.upstream)
            out.string("network.peer.address", peer)
            if peer_port is not None:
                out.integer("network.peer.port", peer_port)
        if done.attempts > 1:
            out.integer("http.request.resend_count", done.attempts - 1)
    elif done.source_ip:
        out.string("client.address", done.source_ip)
        out.string("network.peer.address", done.source_ip)
    error = _error_type(done)
    if error:
        out.string("error.type", error)
    if grpc_path:
        service, _, method = grpc_path[1:].partition("/")
        out.string("rpc.system.name", "grpc")
        out.string("rpc.system", "grpc")
        out.string("rpc.method", f"{service}/{method}")
        out.string("rpc.service", service)
        code = span.grpc_status
        if 0 <= code < len(GRPC_CODES):
            out.string("rpc.response.status_code", GRPC_CODES[code])
            out.integer("rpc.grpc.status_code", code)
    if done.flag != "-":
        out.string("tulle.response_flags", done.flag)
    for key, item in (
        ("tulle.reason", done.reason), ("tulle.route", done.route),
        ("tulle.upstream_cluster", done.cluster), ("tulle.upstream_endpoint", done.upstream),
        ("tulle.upstream_workload", done.upstream_workload),
        ("tulle.peer_principal", done.peer_principal), ("tulle.caller", done.caller),
        ("tulle.service", done.service),
    ):  # fmt: skip
        if item:
            out.string(key, item)
    if client:
        out.integer("tulle.attempts", done.attempts)


def _body_size(sizes: dict[int, bytes], name: str, size: int) -> bytes:
    """A body size attribute (``name``), from ``sizes`` when it was written before."""
    found = sizes.get(size)
    if found is None:
        found = any_bytes(_SPAN_ATTRIBUTE, name, b"\x18" + varint(size & 0xFFFF_FFFF_FFFF_FFFF))
        remember(sizes, size, found)
    return found


def _string(heads: StringHeads, value: str, parts: list[bytes]) -> None:
    """A string attribute that does not repeat, appended to ``parts`` as two pieces."""
    data = value.encode()
    parts.append(heads.head(len(data)))
    parts.append(data)


def _attempt(
    key: tuple[int, str, int, str, str, bool], started: float, ended: float, parts: list[bytes]
) -> None:
    """An attempt (:class:`~tulle.obs.span_events.Attempt`; ``key``: all but its times) as a
    ``Span.events`` field, appended to ``parts``: its head from :data:`_ATTEMPTS`, then its
    duration's value and its time."""
    head = _ATTEMPTS.get(key)
    if head is None:
        head = _attempt_head(key)
        remember(_ATTEMPTS, key, head)
    parts.append(head)
    parts.append(_time_after_duration(started, ended))


def _attempt_head(key: tuple[int, str, int, str, str, bool]) -> bytes:
    """An attempt's event up to its duration's value: the ``Span.events`` key and size, the
    name, the attributes, the duration's key."""
    body = field(b"\x12", b"attempt") + key_values(_EVENT_ATTRIBUTE, attempt_attributes(key))
    size = len(body) + len(_DURATION) + _DURATION_AND_TIME.size
    return b"\x5a" + varint(size) + body + _DURATION


def _time_after_duration(started: float, ended: float) -> bytes:
    """An attempt's duration's value, then its ``Event.time_unix_nano``."""
    return _DURATION_AND_TIME.pack(duration_ms(started, ended), 0x09, int(ended * 1e9))


def _first_attempt(span: Span, parts: list[bytes]) -> None:
    """The first attempt kept in the span's fields, as :func:`_attempt` writes it; one that
    answered (the usual) found by its endpoint and status, with no tuple made."""
    if span.first_error:
        first = span.first_attempt()
        assert first is not None
        _attempt(first.key(), first.started, first.ended, parts)
        return
    by_status = nested(_ANSWERED, span.first_endpoint)
    head = by_status.get(span.first_status)
    if head is None:
        head = _attempt_head((1, span.first_endpoint, span.first_status, "", "", False))
        remember(by_status, span.first_status, head)
    parts.append(head)
    parts.append(_time_after_duration(span.first_started, span.first_ended))


def _event(event: Event, parts: list[bytes]) -> None:
    """Any other event as a ``Span.events`` field, appended to ``parts``."""
    when, name, items = event
    message = _EVENT_TIME.pack(0x09, int(when * 1e9)) + field(b"\x12", name.encode())
    parts.append(field(b"\x5a", message + key_values(_EVENT_ATTRIBUTE, items)))


def _grpc_path(path: str) -> bool:
    """Whether ``path`` has a gRPC method's form (``/package.Service/Method``)."""
    parts = path.split("/")
    return len(parts) == 3 and "." in parts[1] and bool(parts[2])


def _name(method: str, path: str, grpc_status: int) -> tuple[bytes, bool]:
    """The span's name as its field, and whether it is a gRPC call's: ``package.Service/Method``
    for a gRPC call (by its path's form or its answer's status), else the method and the path
    (without its query)."""
    by_path = nested(_NAMES, method)
    found = by_path.get(path)
    if found is None:
        grpc = _grpc_path(path)
        name = path[1:] if grpc else f"{method} {path}"
        found = (field(b"\x2a", name.encode()), grpc)
        remember(by_path, path, found)
    if grpc_status >= 0 and not found[1]:
        return field(b"\x2a", path[1:].encode()), True
    return found


def _error_type(done: Finished) -> str:
    """``error.type``: the mesh's response flag when the mesh made the failure, else the
    status code of a failed answer (as the conventions ask), else empty."""
    failed = done.status == 0 or done.status >= 500
    if done.span is not None and done.span.kind == CLIENT:
        failed = failed or done.status >= 400
    if done.flag != "-":
        return done.flag
    return str(done.status) if failed and done.status else ("_OTHER" if failed else "")


def _status(done: Finished) -> bytes:
    """The span's ``Status``: ERROR for a failed call (a client's 4xx and 5xx, a server's 5xx,
    no answer, a gRPC status the conventions count as failed), with the mesh's reason; empty
    (UNSET) otherwise."""
    span = done.span
    assert span is not None
    client = span.kind == CLIENT
    failed = done.status == 0 or done.status >= 500 or (client and done.status >= 400)
    code = span.grpc_status
    if code > 0 and (client or code in _GRPC_SERVER_ERRORS):
        failed = True
    if not failed:
        return b""
    message = field(b"\x12", done.reason.encode()) if done.reason else b""
    return field(b"\x7a", message + b"\x18" + varint(STATUS_ERROR))


def _span_parts(done: Finished, parts: list[bytes]) -> None:
    """One finished, sampled request's ``Span`` message, its fields appended to ``parts``."""
    span = done.span
    assert span is not None
    if span.tracestate:
        parts.append(bytes.fromhex(f"0a10{span.trace_id}1208{span.span_id}"))
        parts.append(field(b"\x1a", span.tracestate.encode()))
        if span.parent_id:
            parts.append(bytes.fromhex(f"2208{span.parent_id}"))
    elif span.parent_id:
        parts.append(bytes.fromhex(f"0a10{span.trace_id}1208{span.span_id}2208{span.parent_id}"))
    else:
        parts.append(bytes.fromhex(f"0a10{span.trace_id}1208{span.span_id}"))
    path, _, query = done.path.partition("?")
    name, grpc = _name(done.method, path, span.grpc_status)
    parts.append(name)
    started = done.started
    ended = done.ended if done.ended > started else started
    parts.append(
        _KIND_AND_TIMES.pack(0x30, span.kind, 0x39, int(started * 1e9), 0x41, int(ended * 1e9))
    )
    client = span.kind == CLIENT
    repeated, tail = _shape(done, span, client, path if grpc else "")
    parts.append(repeated)
    if client:
        _string(_URL_FULL, f"http://{done.authority}{done.path}", parts)
    else:
        _string(_URL_PATH, path, parts)
        if query:
            _string(_URL_QUERY, query, parts)
    parts.append(_body_size(_RECEIVED, "http.request.body.size", done.received))
    parts.append(_body_size(_SENT, "http.response.body.size", done.sent))
    if done.request_id:
        _string(_REQUEST_ID, done.request_id, parts)
    if span.first_ended:  # the first attempt, kept in the span's fields
        _first_attempt(span, parts)
    events = span.events
    if events is not None:
        for event in events:
            if isinstance(event, Attempt):
                _attempt(event.key(), event.started, event.ended, parts)
            else:
                _event(event, parts)
    parts.append(tail)


def span_bytes(done: Finished) -> bytes:
    """One finished, sampled request as an OTLP ``Span`` message's bytes."""
    parts: list[bytes] = []
    _span_parts(done, parts)
    return b"".join(parts)


def export_request(
    batch: Iterable[Finished],
    resource: list[tuple[str, str | int | float | bool]],
    version: str = "",
) -> bytes:
    """One ``ExportTraceServiceRequest`` for ``batch``, from the process ``resource`` names
    (``service.name`` and the rest)."""
    parts: list[bytes] = [b""]  # the messages around the spans, once their sizes are known
    spans_size = 0
    for done in batch:
        head = len(parts)
        parts.append(b"")  # the span's key and size, once known
        _span_parts(done, parts)
        size = 0
        for index in range(head + 1, len(parts)):
            size += len(parts[index])
        key = b"\x12" + varint(size)  # ScopeSpans.spans = 2
        parts[head] = key
        spans_size += len(key) + size
    scope = field(b"\x0a", SCOPE.encode()) + (field(b"\x12", version.encode()) if version else b"")
    scope_field = field(b"\x0a", scope)  # ScopeSpans.scope = 1
    scope_spans_size = len(scope_field) + spans_size
    resource_field = field(b"\x0a", key_values(_RESOURCE_ATTRIBUTE, resource))
    resource_spans_size = len(resource_field) + 1 + varint_size(scope_spans_size) + scope_spans_size
    # ExportTraceServiceRequest.resource_spans = 1: ResourceSpans.resource = 1, scope_spans = 2
    parts[0] = (
        b"\x0a" + varint(resource_spans_size) + resource_field + b"\x12"
        + varint(scope_spans_size) + scope_field
    )  # fmt: skip
    return b"".join(parts)
