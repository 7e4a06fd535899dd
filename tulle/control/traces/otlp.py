"""OTLP's trace messages to and from the store's spans (sans-IO).

:func:`decode_request` reads an ``ExportTraceServiceRequest`` (protobuf, or OTLP's JSON encoding
with its hex ids) into :class:`~tulle.control.traces.spans.Span` values; a span that breaks the
protocol (ids of the wrong length or all zero, an end before its start) is rejected alone, counted
and described, as OTLP's partial success asks. :func:`response` builds the answer and
:func:`status_body` the ``google.rpc.Status`` an OTLP/HTTP failure carries."""

from __future__ import annotations

import base64
import gzip
import json
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2  # type: ignore[import-untyped]

from tulle.control.traces.otlp_messages import ExportTraceServiceRequest, ExportTraceServiceResponse
from tulle.control.traces.spans import (
    KINDS,
    MAX_ARRAY,
    MAX_ATTRIBUTES,
    MAX_EVENTS,
    Span,
    SpanEvent,
    Value,
    cut,
)

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
MAX_DECODED_BYTES: Final = 16 * 1024 * 1024
"""Largest request accepted after gzip is undone (a bound on a small compressed body)."""
MAX_INTERNED: Final = 64
"""Attribute keys, and string values up to this long, are interned: the same few hundred
strings (methods, routes, clusters, principals) repeat in every span, and 20,000 spans would
otherwise hold 20,000 copies of each."""
UNKNOWN_SERVICE: Final = "unknown_service"
"""OpenTelemetry's service.name when the resource names none."""
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class OtlpError(ValueError):
    """A request that is not OTLP at all (the whole request is refused)."""


@dataclass
class Decoded:
    """The spans of one export request, and those it had to reject."""

    spans: list[Span] = field(default_factory=list)
    rejected: int = 0
    problem: str = ""  # the first rejected span's reason

    def reject(self, reason: str) -> None:
        """Count one rejected span, keeping the first reason."""
        self.rejected += 1
        self.problem = self.problem or reason


def gunzip(body: bytes, limit: int = MAX_DECODED_BYTES) -> bytes:
    """``body`` decompressed (``Content-Encoding: gzip``), refused past ``limit`` bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise OtlpError(f"the body is not gzip: {error}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise OtlpError(f"the body is larger than {limit} bytes once decompressed")
    return data


def gzip_body(body: bytes) -> bytes:
    """``body`` compressed, as an exporter sends it with ``Content-Encoding: gzip``."""
    return gzip.compress(body, compresslevel=5)


def parse_request(body: bytes, content_type: str = PROTOBUF) -> Message:
    """The request message of ``body`` in ``content_type`` (protobuf or OTLP JSON)."""
    message = ExportTraceServiceRequest()
    if content_type == JSON:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as error:
            raise OtlpError(f"the body is not JSON: {error}") from None
        try:
            json_format.ParseDict(_ids_to_base64(data), message, ignore_unknown_fields=True)
        except (json_format.ParseError, TypeError, ValueError) as error:
            raise OtlpError(f"the body is not an OTLP ExportTraceServiceRequest: {error}") from None
        return message
    try:
        message.ParseFromString(body)
    except DecodeError as error:
        raise OtlpError(f"the body is not an OTLP ExportTraceServiceRequest: {error}") from None
    return message


def _ids_to_base64(data: Any) -> Any:
    """OTLP JSON writes trace and span ids in hex where protobuf JSON has base64: turn them
    back (in spans and their links) so the standard parser reads them."""
    if isinstance(data, dict):
        converted = {}
        for key, item in data.items():
            if key in _ID_FIELDS and isinstance(item, str):
                try:
                    converted[key] = base64.b64encode(bytes.fromhex(item)).decode()
                except ValueError:
                    raise OtlpError(f"{key} {cut(item, 40)!r} is not hex") from None
            else:
                converted[key] = _ids_to_base64(item)
        return converted
    if isinstance(data, list):
        return [_ids_to_base64(item) for item in data]
    return data


def decode_request(body: bytes, content_type: str = PROTOBUF) -> Decoded:
    """The spans of an export request (see the module's docstring)."""
    return decode_message(parse_request(body, content_type))


def decode_message(message: Message) -> Decoded:
    """The spans of a parsed export request."""
    decoded = Decoded()
    for resource_spans in message.resource_spans:
        resource = attributes(resource_spans.resource.attributes)[0]
        service = resource.get("service.name")
        service = service if isinstance(service, str) and service else UNKNOWN_SERVICE
        for scope_spans in resource_spans.scope_spans:
            scope = cut(scope_spans.scope.name)
            for span in scope_spans.spans:
                problem = _problem(span)
                if problem:
                    decoded.reject(problem)
                    continue
                decoded.spans.append(_span(span, service, resource, scope))
    return decoded


def _problem(span: Message) -> str:
    """Why ``span`` breaks the protocol ("" when it does not)."""
    name = cut(span.name, 80)
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return f"span {name!r}: trace_id must be 16 bytes, not all zero"
    if len(span.span_id) != 8 or not any(span.span_id):
        return f"span {name!r}: span_id must be 8 bytes, not all zero"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return f"span {name!r}: parent_span_id must be empty or 8 bytes"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return f"span {name!r}: end_time_unix_nano is before start_time_unix_nano"
    return ""


def _span(span: Message, service: str, resource: dict[str, Value], scope: str) -> Span:
    kept, dropped = attributes(span.attributes)
    events = tuple(
        SpanEvent(sys.intern(cut(e.name)), e.time_unix_nano, attributes(e.attributes)[0])
        for e in span.events[:MAX_EVENTS]
    )
    parent = span.parent_span_id.hex() if any(span.parent_span_id) else ""
    return Span(
        trace_id=sys.intern(span.trace_id.hex()),  # shared by its spans
        span_id=span.span_id.hex(),
        parent_span_id=parent,
        name=sys.intern(cut(span.name)),
        kind=KINDS[span.kind] if 0 <= span.kind < len(KINDS) else KINDS[0],
        service=sys.intern(cut(service)),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status=_STATUS.get(span.status.code, "unset"),
        status_message=cut(span.status.message),
        attributes=kept,
        resource=resource,
        events=events,
        scope=scope,
        dropped_attributes=dropped + span.dropped_attributes_count,
        dropped_events=max(0, len(span.events) - MAX_EVENTS) + span.dropped_events_count,
    )


def attributes(pairs: Iterable[Message]) -> tuple[dict[str, Value], int]:
    """OTLP key-values as JSON-able values, at most :data:`MAX_ATTRIBUTES`; and how many were
    left out."""
    kept: dict[str, Value] = {}
    dropped = 0
    for pair in pairs:
        if len(kept) >= MAX_ATTRIBUTES:
            dropped += 1
            continue
        kept[sys.intern(cut(pair.key, 128))] = value(pair.value)
    return kept, dropped


def value(any_value: Message, depth: int = 0) -> Value:
    """An ``AnyValue`` as JSON shows it (nested values to a depth of 3)."""
    which = any_value.WhichOneof("value")
    if which == "string_value":
        text = any_value.string_value
        return sys.intern(text) if len(text) <= MAX_INTERNED else cut(text)
    if which in ("bool_value", "int_value", "double_value"):
        result: Value = getattr(any_value, which)
        return result
    if which == "bytes_value":
        return cut(base64.b64encode(any_value.bytes_value).decode())
    if depth >= 3:
        return "…"
    if which == "array_value":
        return [value(v, depth + 1) for v in any_value.array_value.values[:MAX_ARRAY]]
    if which == "kvlist_value":
        return {
            cut(kv.key, 128): value(kv.value, depth + 1)
            for kv in any_value.kvlist_value.values[:MAX_ARRAY]
        }
    return None


def response(rejected: int = 0, problem: str = "") -> Message:
    """The answer to an export: a partial success when spans were rejected."""
    answer = ExportTraceServiceResponse()
    if rejected:
        answer.partial_success.rejected_spans = rejected
        answer.partial_success.error_message = problem
    return answer


def encode(message: Any, content_type: str) -> bytes:
    """A message in the request's encoding (protobuf, or protobuf JSON for a JSON request)."""
    if content_type == JSON:
        return json.dumps(json_format.MessageToDict(message)).encode()
    data: bytes = message.SerializeToString()
    return data


def status_body(code: int, message: str, content_type: str) -> bytes:
    """The ``google.rpc.Status`` body of a refused OTLP/HTTP request (``code``: a gRPC code)."""
    return encode(status_pb2.Status(code=code, message=message), content_type)
