"""OTLP in: ``POST /v1/traces`` on the control plane's HTTP port (OTLP/HTTP, protobuf or JSON,
gzip or not) and ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` on its gRPC
(xDS) ports, both into the :class:`~tulle.control.traces.store.TraceStore`.

Only an authenticated exporter is heard, as elsewhere on the control plane: the admin token, or a
workload's credential (its bootstrap token; with ``--registry kubernetes`` its service-account
token too), as ``authorization: Bearer <token>`` (HTTP also takes ``x-tulle-token``). Over gRPC the
call must come over TLS (the secure xDS port) unless the control plane runs with
``--insecure-xds``, as the CA's signing service refuses a credential sent in plain text. Each
kept span's resource records who exported it (``tulle.exporter``: ``admin`` or
``ns/<namespace>/sa/<serviceAccount>``). Refusals say why: HTTP 401 / gRPC UNAUTHENTICATED for no
or an unknown credential, 400 / INVALID_ARGUMENT for a body that is not OTLP, 415 for another
content type or encoding; spans that break the protocol alone are rejected with OTLP's partial
success (the rest is kept). Decoding runs in a thread (a batch of 512 spans is tens of
milliseconds of CPU); only the store's update runs on the loop, which serves xDS too."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Iterator
from typing import Final, Protocol

import grpc
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tulle.control.traces.forward import OtlpForwarder
from tulle.control.traces.otlp import (
    JSON,
    PROTOBUF,
    Decoded,
    OtlpError,
    decode_message,
    encode,
    gunzip,
    parse_request,
    response,
    status_body,
)
from tulle.control.traces.store import TraceStore
from tulle.security.grpc_token import unwrap
from tulle.security.tokens import Unauthenticated, WorkloadIdentity, bearer_token
from tulle.transport.http_server import Request, Response

log = logging.getLogger(__name__)

SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD: Final = "Export"
HTTP_PATH: Final = "/v1/traces"
TOKEN_HEADER: Final = "x-tulle-token"
EXPORTER: Final = "tulle.exporter"
"""The resource attribute naming who exported a span."""


class Refused(Exception):  # noqa: N818 (named for the outcome)
    """An export refused whole: the HTTP status, the gRPC code, and why."""

    def __init__(self, http: int, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.http = http
        self.code = code


class Workloads(Protocol):
    """Checks a workload credential (``BootstrapTokens``, ``KubernetesWorkloads``)."""

    def authenticate_replica(self, credential: str) -> tuple[str, WorkloadIdentity]: ...


class ExporterAuth:
    """Who an exporter is, from its credential: ``admin`` or ``ns/<ns>/sa/<sa>``."""

    def __init__(self, admin_token: str, workloads: Workloads, insecure_grpc: bool) -> None:
        self._admin = admin_token.encode()
        self.workloads = workloads
        self.insecure_grpc = insecure_grpc  # --insecure-xds: gRPC exports over plain text too

    async def exporter(self, credential: str | None) -> str:
        """The exporter ``credential`` proves; :class:`Refused` when none."""
        if not credential:
            raise Refused(
                401,
                grpc.StatusCode.UNAUTHENTICATED,
                "no credential: send 'authorization: Bearer <token>' (a workload's bootstrap "
                "token, or the admin token) with the spans",
            )
        credential = unwrap(credential)
        if hmac.compare_digest(credential.encode(), self._admin):
            return "admin"
        try:
            if getattr(self.workloads, "blocking", False):  # a TokenReview: off the loop
                _, who = await asyncio.to_thread(self.workloads.authenticate_replica, credential)
            else:
                _, who = self.workloads.authenticate_replica(credential)
        except Unauthenticated as error:
            raise Refused(
                401, grpc.StatusCode.UNAUTHENTICATED, f"credential refused: {error}"
            ) from None
        return f"ns/{who.namespace}/sa/{who.service_account}"


class _StoreMetrics(Collector):
    """The store's contents and what it let go, read at scrape time."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        counts = self.store.counts
        yield GaugeMetricFamily(
            "tulle_trace_store_spans", "Spans the trace store holds.", value=counts.spans
        )
        yield GaugeMetricFamily(
            "tulle_trace_store_traces", "Traces the trace store holds.", value=counts.traces
        )
        yield CounterMetricFamily(
            "tulle_trace_store_evicted_spans",
            "Spans evicted (with their whole trace) to keep the store within its bound.",
            value=counts.evicted_spans,
        )
        yield CounterMetricFamily(
            "tulle_trace_store_dropped_spans",
            "Spans dropped because their trace alone was as large as the store.",
            value=counts.dropped_spans,
        )


class TraceReceiver:
    """Takes OTLP exports (HTTP and gRPC) from authenticated exporters into ``store``."""

    def __init__(
        self,
        store: TraceStore,
        auth: ExporterAuth,
        registry: CollectorRegistry,
        forwarder: OtlpForwarder | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.forwarder = forwarder  # the Mesh's OTLP/gRPC collector, if it names one
        self.exports = Counter(
            "tulle_trace_exports",
            "OTLP trace exports the control plane answered, by transport and result.",
            ["transport", "result"],
            registry=registry,
        )
        self.spans = Counter(
            "tulle_trace_spans_received",
            "Spans the control plane's trace store received, by transport and result.",
            ["transport", "result"],
            registry=registry,
        )
        registry.register(_StoreMetrics(store))

    def _keep(
        self,
        message: Message,
        decoded: Decoded,
        exporter: str,
        transport: str,
    ) -> Decoded:
        if self.forwarder is not None and decoded.spans:
            self.forwarder.offer(message, len(decoded.spans))
        for span in decoded.spans:
            span.resource[EXPORTER] = exporter
        kept = self.store.add(decoded.spans)
        self.spans.labels(transport, "accepted").inc(kept)
        rejected = decoded.rejected + len(decoded.spans) - kept
        if rejected:
            self.spans.labels(transport, "rejected").inc(rejected)
            decoded.rejected = rejected
            decoded.problem = decoded.problem or (
                f"the trace store holds at most {self.store.max_spans} spans of one trace"
            )
        self.exports.labels(transport, "partial" if rejected else "ok").inc()
        return decoded

    # --- HTTP -----------------------------------------------------------------------------

    async def http(self, request: Request) -> Response:
        """``POST /v1/traces`` (OTLP/HTTP)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        answer_type = JSON if content_type == JSON else PROTOBUF
        try:
            if request.method != "POST":
                raise Refused(405, grpc.StatusCode.UNIMPLEMENTED, f"use POST {HTTP_PATH}")
            if content_type not in (PROTOBUF, JSON):
                raise Refused(
                    415,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Content-Type {content_type or 'none'!r}: send {PROTOBUF} or {JSON}",
                )
            exporter = await self.auth.exporter(_http_credential(request))
            body = request.body
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding == "gzip":
                body = await asyncio.to_thread(gunzip, body)
            elif encoding not in ("identity", ""):
                raise Refused(
                    415,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Content-Encoding {encoding!r}: send gzip or none",
                )
            message, decoded = await asyncio.to_thread(_decode, body, content_type)
        except OtlpError as error:
            refusal = Refused(400, grpc.StatusCode.INVALID_ARGUMENT, str(error))
            return self._refused_http(refusal, answer_type)
        except Refused as refusal:
            return self._refused_http(refusal, answer_type)
        self._keep(message, decoded, exporter, "http")
        body = encode(response(decoded.rejected, decoded.problem), answer_type)
        return Response(200, body, {"content-type": answer_type})

    def _refused_http(self, refusal: Refused, answer_type: str) -> Response:
        self.exports.labels("http", _result(refusal)).inc()
        log.warning("OTLP/HTTP export refused: %s", refusal)
        body = status_body(refusal.code.value[0], str(refusal), answer_type)
        headers = {"content-type": answer_type}
        if refusal.http == 401:
            headers["www-authenticate"] = 'Bearer realm="tulle"'
        return Response(refusal.http, body, headers)

    # --- gRPC -----------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        """The TraceService for ``server.add_generic_rpc_handlers`` (bytes in, bytes out)."""
        method = grpc.unary_unary_rpc_method_handler(self._export)
        return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})

    async def _export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            secure = context.auth_context().get("transport_security_type") == [b"ssl"]
            if not secure and not self.auth.insecure_grpc:
                raise Refused(
                    400,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "spans are taken over gRPC only over TLS: call the secure xDS port (or "
                    "POST /v1/traces on the HTTP port)",
                )
            metadata = {k: str(v) for k, v in context.invocation_metadata() or ()}
            exporter = await self.auth.exporter(bearer_token(metadata.get("authorization", "")))
            message, decoded = await asyncio.to_thread(_decode, request, PROTOBUF)
        except OtlpError as error:
            refusal = Refused(400, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except Refused as refused:
            refusal = refused
        else:
            self._keep(message, decoded, exporter, "grpc")
            return encode(response(decoded.rejected, decoded.problem), PROTOBUF)
        self.exports.labels("grpc", _result(refusal)).inc()
        log.warning("OTLP/gRPC export from %s refused: %s", context.peer(), refusal)
        await context.abort(refusal.code, str(refusal))
        raise AssertionError("abort returns only by raising")


def _decode(body: bytes, content_type: str) -> tuple[Message, Decoded]:
    """Parse and decode an export: CPU work (tens of milliseconds for a batch of 512 spans),
    done in a thread so that the loop serving xDS and the API keeps answering meanwhile."""
    message = parse_request(body, content_type)
    return message, decode_message(message)


def _http_credential(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header:
        credential = bearer_token(header)
        if credential is None:
            raise Refused(
                401, grpc.StatusCode.UNAUTHENTICATED, "Authorization must be 'Bearer <token>'"
            )
        return credential
    return request.headers.get(TOKEN_HEADER, "").strip() or None


def _result(refusal: Refused) -> str:
    return {401: "unauthenticated", 400: "malformed", 415: "malformed"}.get(refusal.http, "refused")
