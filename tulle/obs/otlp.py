"""Spans as OTLP protobuf: a batch of finished, sampled requests becomes the bytes of one
``ExportTraceServiceRequest`` (opentelemetry-proto's ``collector/trace/v1``), what ``POST
/v1/traces`` (OTLP/HTTP) and ``TraceService/Export`` (OTLP/gRPC) carry. This runs in the
exporter's thread, never on the request path.

The wire format is written here directly (varints, length-delimited fields, fixed64 times),
with the field numbers of opentelemetry-proto's messages: building its message objects cost
about 60 µs a span in the pure-Python build, more than the rest of a traced request; these
bytes cost a fraction of that, and the sidecar does not load the OTLP modules at all. The tests
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
from tulle.obs.tracing import CLIENT

Value = str | int | float | bool | list[str]
SCOPE: Final = "tulle"

GRPC_CODES: Final = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip
# A server's own failures (semantic conventions, gRPC server spans); a client's: any non-OK.
_GRPC_SERVER_ERRORS: Final = frozenset({2, 4, 12, 13, 14, 15})
STATUS_ERROR: Final = 2  # OTLP's Status.StatusCode STATUS_CODE_ERROR

# --- the wire format ------------------------------------------------------------------------

_SMALL: Final = [bytes([n]) for n in range(128)]
# A KeyValue's value field (2) of a short AnyValue, by its size; and of a short AnyValue's
# string_value (1), by the string's size: made once, not per attribute.
_ANY: Final = [bytes([0x12, n]) for n in range(128)]
_ANY_STRING: Final = [bytes([0x12, n + 2, 0x0A, n]) for n in range(126)]
_FIXED64: Final = struct.Struct("<Q")
_DOUBLE: Final = struct.Struct("<d")
_FIXED32: Final = struct.Struct("<I")
# Field keys ((number << 3) | wire type) of the messages written here.
_SPAN_ATTRIBUTE: Final = b"\x4a"  # Span.attributes = 9
_EVENT_ATTRIBUTE: Final = b"\x1a"  # Event.attributes = 3
_RESOURCE_ATTRIBUTE: Final = b"\x0a"  # Resource.attributes = 1
_FLAGS: Final = b"\x85\x01"  # Span.flags = 16, fixed32


def varint(number: int) -> bytes:
    """``number`` (unsigned, < 2**64) as a protobuf varint."""
    if number < 128:
        return _SMALL[number]
    out = bytearray()
    while number >= 128:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _field(key: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return key + varint(len(payload)) + payload


def _size(number: int) -> int:
    """How many bytes ``varint(number)`` takes."""
    size = 1
    while number >= 128:
        number >>= 7
        size += 1
    return size


_KEYS: Final[dict[str, bytes]] = {}  # an attribute key's KeyValue.key field, made once


def _key(key: str) -> bytes:
    """``key`` as a ``KeyValue.key`` field."""
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = _KEYS[key] = _field(b"\x0a", key.encode())
    return encoded


_CACHE: Final[dict[tuple[bytes, str, str | int | bool], bytes]] = {}
"""Attributes written already, by field, key and value: most repeat from span to span (the
method, the host, the cluster, the endpoint, a status), and a hit is one lookup instead of an
encoding. Emptied when it reaches ``_CACHE_MAX`` (values such as paths are many)."""
_CACHE_MAX: Final = 4096


def _any_bytes(field: bytes, key: str, value: bytes) -> bytes:
    """A ``KeyValue`` whose ``AnyValue`` is ``value``, as the repeated field ``field``."""
    name = _key(key)
    size = len(value)
    if len(name) + size < 126:  # the usual: every length is one byte
        return field + _SMALL[len(name) + 2 + size] + name + _ANY[size] + value
    return (
        field + varint(len(name) + 1 + _size(size) + size) + name + b"\x12" + varint(size)
        + value
    )  # fmt: skip


def _string_bytes(field: bytes, key: str, value: str) -> bytes:
    """A string ``KeyValue`` as the repeated field ``field``."""
    data = value.encode()
    size = len(data)
    name = _key(key)
    if len(name) + size < 124:  # the usual: every length is one byte
        return field + _SMALL[len(name) + 4 + size] + name + _ANY_STRING[size] + data
    any_size = 1 + _size(size) + size
    return (
        field + varint(len(name) + 1 + _size(any_size) + any_size) + name + b"\x12"
        + varint(any_size) + b"\x0a" + varint(size) + data
    )  # fmt: skip


def _remember(entry: tuple[bytes, str, str | int | bool], encoded: bytes) -> None:
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[entry] = encoded


class Attributes:
    """The attributes of one message as they are written (``KeyValue``s in its repeated field
    ``field``), appended to ``parts``: one call per attribute, typed; a string, integer or
    boolean attribute seen before is taken from the cache (``cache=False`` for values that
    never repeat)."""

    __slots__ = ("field", "parts")

    def __init__(self, field: bytes, parts: list[bytes] | None = None) -> None:
        self.field = field
        self.parts: list[bytes] = [] if parts is None else parts  # where they are written

    def string(self, key: str, value: str, cache: bool = True) -> None:
        """A string attribute."""
        if not cache:
            self.parts.append(_string_bytes(self.field, key, value))
            return
        entry: tuple[bytes, str, str | int | bool] = (self.field, key, value)
        encoded = _CACHE.get(entry)
        if encoded is None:
            encoded = _string_bytes(self.field, key, value)
            _remember(entry, encoded)
        self.parts.append(encoded)

    def integer(self, key: str, value: int) -> None:
        """An int64 attribute."""
        entry: tuple[bytes, str, str | int | bool] = (self.field, key, value)
        encoded = _CACHE.get(entry)
        if encoded is None:
            encoded = _any_bytes(self.field, key, b"\x18" + varint(value & 0xFFFF_FFFF_FFFF_FFFF))
            _remember(entry, encoded)
        self.parts.append(encoded)

    def boolean(self, key: str, value: bool) -> None:
        """A boolean attribute."""
        self.parts.append(_any_bytes(self.field, key, b"\x10\x01" if value else b"\x10\x00"))

    def double(self, key: str, value: float) -> None:
        """A double attribute."""
        self.parts.append(_any_bytes(self.field, key, b"\x21" + _DOUBLE.pack(value)))

    def strings(self, key: str, values: list[str]) -> None:
        """An array of strings."""
        items = b"".join([_field(b"\x0a", _field(b"\x0a", v.encode())) for v in values])
        self.parts.append(_any_bytes(self.field, key, _field(b"\x2a", items)))

    def value(self, key: str, item: Value) -> None:
        """An attribute of any of the types above."""
        if isinstance(item, bool):
            self.boolean(key, item)
        elif isinstance(item, int):
            self.integer(key, item)
        elif isinstance(item, float):
            self.double(key, item)
        elif isinstance(item, list):
            self.strings(key, item)
        else:
            self.string(key, item)

    def encoded(self) -> bytes:
        """The attributes' bytes."""
        return b"".join(self.parts)


def key_values(field: bytes, pairs: Iterable[tuple[str, Value]]) -> bytes:
    """Attributes from pairs, as the repeated field ``field``."""
    out = Attributes(field)
    for key, item in pairs:
        out.value(key, item)
    return out.encoded()


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


_SPANS: Final[dict[tuple[object, ...], bytes]] = {}
"""The attributes of a span that repeat from request to request (its kind, method, host, status,
peer, route, cluster, endpoint, reason, principals...), written once per distinct set: one
lookup instead of ~15 encodings. Emptied when it reaches ``_CACHE_MAX`` (peers are many)."""


def attributes(done: Finished, out: Attributes) -> None:
    """The span attributes of a finished request, written to ``out``."""
    span = done.span
    assert span is not None
    client = span.kind == CLIENT
    path, _, query = done.path.partition("?")
    grpc = span.grpc_status >= 0 or _grpc_path(path)
    key = (
        client, done.method, done.authority, done.status, done.upstream, done.source_ip,
        done.attempts, done.flag, done.reason, done.route, done.cluster, done.upstream_workload,
        done.peer_principal, done.caller, done.service, span.grpc_status, path if grpc else "",
    )  # fmt: skip
    repeated = _SPANS.get(key)
    if repeated is None:
        block = Attributes(out.field)
        _repeated_attributes(done, block, client, path if grpc else "")
        repeated = block.encoded()
        if len(_SPANS) >= _CACHE_MAX:
            _SPANS.clear()
        _SPANS[key] = repeated
    out.parts.append(repeated)
    if client:
        out.string("url.full", f"http://{done.authority}{done.path}", cache=False)
    else:
        out.string("url.path", path, cache=False)
        if query:
            out.string("url.query", query, cache=False)
    out.integer("http.request.body.size", done.received)
    out.integer("http.response.body.size", done.sent)
    if done.request_id:
        out.strings("http.request.header.x-request-id", [done.request_id])


def _repeated_attributes(done: Finished, out: Attributes, client: bool, grpc_path: str) -> None:
    """The attributes :data:`_SPANS` keeps: all but the URL, the sizes and the request id."""
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


_EVENTS: Final[dict[tuple[tuple[str, Value], ...], bytes]] = {}
"""Events' attributes but a trailing measured one (an attempt's duration), by their values:
an attempt's number, endpoint, status and whether it is retried repeat."""


def _event_attributes(items: list[tuple[str, str | int | float | bool]]) -> bytes:
    """An event's attributes: those before a trailing float from :data:`_EVENTS`."""
    last = items[-1] if items else None
    if last is None or not isinstance(last[1], float):
        return key_values(_EVENT_ATTRIBUTE, items)
    key = tuple(items[:-1])
    repeated = _EVENTS.get(key)
    if repeated is None:
        repeated = key_values(_EVENT_ATTRIBUTE, key)
        if len(_EVENTS) >= _CACHE_MAX:
            _EVENTS.clear()
        _EVENTS[key] = repeated
    out = Attributes(_EVENT_ATTRIBUTE)
    out.double(last[0], last[1])
    return repeated + out.parts[0]


def _grpc_path(path: str) -> bool:
    """Whether ``path`` has a gRPC method's form (``/package.Service/Method``)."""
    parts = path.split("/")
    return len(parts) == 3 and "." in parts[1] and bool(parts[2])


def _error_type(done: Finished) -> str:
    """``error.type``: the mesh's response flag when the mesh made the failure, else the
    status code of a failed answer (as the conventions ask), else empty."""
    failed = done.status == 0 or done.status >= 500
    if done.span is not None and done.span.kind == CLIENT:
        failed = failed or done.status >= 400
    if done.flag != "-":
        return done.flag
    return str(done.status) if failed and done.status else ("_OTHER" if failed else "")


def span_name(done: Finished) -> str:
    """The span's name: ``package.Service/Method`` for a gRPC call, else the method and the
    path (without its query)."""
    path = done.path.partition("?")[0]
    span = done.span
    if (span is not None and span.grpc_status >= 0) or _grpc_path(path):
        return path[1:]
    return f"{done.method} {path}"


def _nanos(seconds: float) -> bytes:
    return _FIXED64.pack(int(seconds * 1e9))


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
    message = _field(b"\x12", done.reason.encode()) if done.reason else b""
    return _field(b"\x7a", message + b"\x18" + varint(STATUS_ERROR))


def span_bytes(done: Finished) -> bytes:
    """One finished, sampled request as an OTLP ``Span`` message's bytes."""
    span = done.span
    assert span is not None
    parts = [b"\x0a\x10" + bytes.fromhex(span.trace_id), b"\x12\x08" + bytes.fromhex(span.span_id)]
    if span.tracestate:
        parts.append(_field(b"\x1a", span.tracestate.encode()))
    if span.parent_id:
        parts.append(b"\x22\x08" + bytes.fromhex(span.parent_id))
    parts += [
        _field(b"\x2a", span_name(done).encode()),
        b"\x30" + varint(span.kind),
        b"\x39" + _nanos(done.started),
        b"\x41" + _nanos(max(done.ended, done.started)),
    ]
    attributes(done, Attributes(_SPAN_ATTRIBUTE, parts))
    for when, name, items in span.events:
        event = b"\x09" + _nanos(when) + _field(b"\x12", name.encode())
        parts.append(_field(b"\x5a", event + _event_attributes(items)))
    parts.append(_status(done))
    # W3C trace flags (sampled), and that the parent's context is known and remote: every
    # parent here came in a request's headers.
    parts.append(_FLAGS + _FIXED32.pack(0x301 if span.parent_id else 0x101))
    return b"".join(parts)


def export_request(
    batch: Iterable[Finished],
    resource: list[tuple[str, str | int | float | bool]],
    version: str = "",
) -> bytes:
    """One ``ExportTraceServiceRequest`` for ``batch``, from the process ``resource`` names
    (``service.name`` and the rest)."""
    scope = _field(b"\x0a", SCOPE.encode()) + (
        _field(b"\x12", version.encode()) if version else b""
    )
    spans = b"".join([_field(b"\x12", span_bytes(done)) for done in batch])
    scope_spans = _field(b"\x0a", scope) + spans
    resource_bytes = key_values(_RESOURCE_ATTRIBUTE, resource)
    resource_spans = _field(b"\x0a", resource_bytes) + _field(b"\x12", scope_spans)
    return _field(b"\x0a", resource_spans)
