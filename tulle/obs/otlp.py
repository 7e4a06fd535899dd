"""Spans as OTLP protobuf (``opentelemetry.proto``): a batch of finished, sampled requests
becomes one ``ExportTraceServiceRequest``, what ``POST /v1/traces`` (OTLP/HTTP) and the
``TraceService/Export`` call (OTLP/gRPC) carry. This runs in the exporter's thread, never on
the request path; the data plane loads it only once a span is to be sent.

Attributes follow OpenTelemetry's semantic conventions for HTTP spans (stable) and RPC spans
(``rpc.system.name``, ``rpc.method`` as ``package.Service/Method``, ``rpc.response.
status_code``; with the older ``rpc.system``, ``rpc.service`` and ``rpc.grpc.status_code``
beside them, which tools still read), plus the mesh's own under ``tulle.``: the response
flags and the reason of an answer the mesh made (what ``x-tulle-error`` says), the route, the
upstream cluster, endpoint and workload, the attempts, and the peer's SPIFFE id from mTLS."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tulle.obs.finished import Finished
from tulle.obs.tracing import CLIENT

Value = str | int | float | bool
SCOPE: Final = "tulle"

GRPC_CODES: Final = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip
# A server's own failures (semantic conventions, gRPC server spans); a client's: any non-OK.
_GRPC_SERVER_ERRORS: Final = frozenset({2, 4, 12, 13, 14, 15})


def value(item: Value | list[str]) -> AnyValue:
    """An attribute's value."""
    if isinstance(item, bool):
        return AnyValue(bool_value=item)
    if isinstance(item, int):
        return AnyValue(int_value=item)
    if isinstance(item, float):
        return AnyValue(double_value=item)
    if isinstance(item, list):
        return AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in item]))
    return AnyValue(string_value=item)


def key_values(pairs: Iterable[tuple[str, Value | list[str]]]) -> list[KeyValue]:
    """Attributes from pairs."""
    return [KeyValue(key=key, value=value(item)) for key, item in pairs]


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


def attributes(done: Finished) -> list[tuple[str, Value | list[str]]]:
    """The span attributes of a finished request."""
    span = done.span
    assert span is not None
    client = span.kind == CLIENT
    path, _, query = done.path.partition("?")
    host, port = _host_port(done.authority)
    pairs: list[tuple[str, Value | list[str]]] = [("http.request.method", done.method)]
    if client:
        pairs.append(("url.full", f"http://{done.authority}{done.path}"))
    else:
        pairs += [("url.path", path), ("url.scheme", "http")]
        if query:
            pairs.append(("url.query", query))
    if host:
        pairs.append(("server.address", host))
    if port is not None:
        pairs.append(("server.port", port))
    if done.status:
        pairs.append(("http.response.status_code", done.status))
    pairs += [("http.request.body.size", done.received), ("http.response.body.size", done.sent)]
    if client:
        if done.upstream:
            peer, peer_port = _host_port(done.upstream)
            pairs.append(("network.peer.address", peer))
            if peer_port is not None:
                pairs.append(("network.peer.port", peer_port))
        if done.attempts > 1:
            pairs.append(("http.request.resend_count", done.attempts - 1))
    elif done.source_ip:
        pairs += [("client.address", done.source_ip), ("network.peer.address", done.source_ip)]
    if done.request_id:
        pairs.append(("http.request.header.x-request-id", [done.request_id]))
    error = _error_type(done)
    if error:
        pairs.append(("error.type", error))
    if span.grpc_status >= 0 or _grpc_path(path):
        service, _, method = path[1:].partition("/")
        pairs += [
            ("rpc.system.name", "grpc"), ("rpc.system", "grpc"),
            ("rpc.method", f"{service}/{method}"), ("rpc.service", service),
        ]  # fmt: skip
        code = span.grpc_status
        if 0 <= code < len(GRPC_CODES):
            pairs += [("rpc.response.status_code", GRPC_CODES[code]),
                      ("rpc.grpc.status_code", code)]  # fmt: skip
    mesh: list[tuple[str, Value | list[str]]] = [
        ("tulle.response_flags", done.flag), ("tulle.reason", done.reason),
        ("tulle.route", done.route), ("tulle.upstream_cluster", done.cluster),
        ("tulle.upstream_endpoint", done.upstream), ("tulle.upstream_workload",
        done.upstream_workload), ("tulle.peer_principal", done.peer_principal),
        ("tulle.caller", done.caller), ("tulle.service", done.service),
    ]  # fmt: skip
    pairs += [(key, item) for key, item in mesh if item and item != "-"]
    if client:
        pairs.append(("tulle.attempts", done.attempts))
    return pairs


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


def status(done: Finished) -> Status:
    """ERROR for a failed call (a client's 4xx and 5xx, a server's 5xx, no answer, a gRPC
    status the conventions count as failed), with the mesh's reason as the message."""
    span = done.span
    assert span is not None
    client = span.kind == CLIENT
    failed = done.status == 0 or done.status >= 500 or (client and done.status >= 400)
    code = span.grpc_status
    if code > 0 and (client or code in _GRPC_SERVER_ERRORS):
        failed = True
    if not failed:
        return Status()
    return Status(code=Status.STATUS_CODE_ERROR, message=done.reason)


def span_name(done: Finished) -> str:
    """The span's name: ``package.Service/Method`` for a gRPC call, else the method and the
    path (without its query)."""
    path = done.path.partition("?")[0]
    span = done.span
    if (span is not None and span.grpc_status >= 0) or _grpc_path(path):
        return path[1:]
    return f"{done.method} {path}"


def _nanos(seconds: float) -> int:
    return int(seconds * 1e9)


def otlp_span(done: Finished) -> Span:
    """One finished, sampled request as an OTLP span."""
    span = done.span
    assert span is not None
    result = Span(
        trace_id=bytes.fromhex(span.trace_id),
        span_id=bytes.fromhex(span.span_id),
        trace_state=span.tracestate,
        parent_span_id=bytes.fromhex(span.parent_id) if span.parent_id else b"",
        flags=0x101 if span.parent_id else 0x100,  # W3C flags known; a parent's is remote
        name=span_name(done),
        kind=span.kind,  # type: ignore[arg-type]
        start_time_unix_nano=_nanos(done.started),
        end_time_unix_nano=_nanos(max(done.ended, done.started)),
        attributes=key_values(attributes(done)),
        status=status(done),
    )
    for when, name, items in span.events:
        result.events.add(time_unix_nano=_nanos(when), name=name, attributes=key_values(items))
    return result


def export_request(
    batch: Iterable[Finished], resource: list[tuple[str, Value]], version: str = ""
) -> ExportTraceServiceRequest:
    """One OTLP request for ``batch``, from the process ``resource`` names (``service.name``
    and the rest)."""
    spans = ScopeSpans(spans=[otlp_span(done) for done in batch])
    spans.scope.name, spans.scope.version = SCOPE, version
    resource_spans = ResourceSpans(scope_spans=[spans])
    resource_spans.resource.attributes.extend(key_values(resource))
    return ExportTraceServiceRequest(resource_spans=[resource_spans])
