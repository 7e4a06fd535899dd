"""The client span the engine keeps for a sampled request, on both of its paths: the context it
sends upstream (every attempt the same parent: the client span), each attempt an event
(endpoint, status or failure, retried or not), a fallback an event, a mesh-made answer's reason
and flag on the record the span is exported from; and for an unsampled request, no span and
no id, only the decision passed on."""

from __future__ import annotations

import random

import pytest

from tests.engine.conftest import (
    Upstreams,
    build_engine,
    handle,
    refuse,
    request,
    run,
    status,
    workload,
)
from tests.engine.outbound_config import TABLE, vs
from tests.engine.test_outbound_fallback import CACHE, fallback
from tulle.control.traces.otlp_messages import ExportTraceServiceRequest
from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.message import Request, Response, finished
from tulle.engine.outbound import Engine
from tulle.obs.otlp import export_request
from tulle.obs.span_events import event_of
from tulle.obs.tracing import NOT_SAMPLED, Span, Tracer, parse_context

pytestmark = pytest.mark.usefixtures("engine_path")

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SAMPLED = [("traceparent", f"00-{TRACE}-{PARENT}-01")]


class Seen:
    """What each upstream attempt carried: its trace context."""

    def __init__(self) -> None:
        self.contexts: list[tuple[str, str, int]] = []

    def recording(self, then: object) -> object:
        def answer(endpoint: EndpointSpec, sent: Request) -> Response:
            context = parse_context(sent.headers)
            assert context is not None
            self.contexts.append((context.trace_id, context.parent_id, context.sampled))
            return then(endpoint, sent)  # type: ignore[operator]

        return answer


def traced(engine: Engine, sampling: float = 0.0) -> Engine:
    engine.tracer = Tracer(sampling, random.Random(3))
    return engine


def test_retries_are_events_of_one_client_span_and_every_attempt_its_child() -> None:
    config = workload("v1") + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 2, retryOn: 5xx}""")  # fmt: skip
    seen = Seen()
    upstreams = Upstreams({"10.0.0.1:8080": seen.recording(status(503))})  # type: ignore[dict-item]
    engine = traced(build_engine(config, {"v1": [("10.0.0.1", 8080)]}, upstreams))
    sent = request(headers=SAMPLED)
    response = run(handle(engine, TABLE, sent))
    assert (response.status, response.flag) == (503, "URX")
    span = sent.span
    assert isinstance(span, Span)
    assert (span.trace_id, span.parent_id) == (TRACE, PARENT)
    assert seen.contexts == [(TRACE, span.span_id, 1)] * 3
    attempts = [
        (name, dict(attributes)) for _, name, attributes in map(event_of, span.all_events())
    ]
    assert [(a["tulle.attempt"], a["http.response.status_code"], a["tulle.retried"])
            for _, a in attempts] == [(1, 503, True), (2, 503, True), (3, 503, False)]  # fmt: skip
    assert {name for name, _ in attempts} == {"attempt"}
    assert all(a["tulle.upstream_endpoint"] == "10.0.0.1:8080" for _, a in attempts)
    done = finished("outbound", sent, response, 1.0, 2.0, 0)
    assert done.span is span  # what the exporter gets
    assert (done.flag, done.attempts) == ("URX", 3)


def test_a_failed_attempt_says_why_and_a_fallback_is_an_event() -> None:
    config = workload("v1") + CACHE + fallback() + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 1, retryOn: connect-failure}""")  # fmt: skip
    upstreams = Upstreams({"10.0.0.1:8080": refuse})
    engine = traced(build_engine(config, {"v1": [("10.0.0.1", 8080)]}, upstreams))
    sent = request(headers=SAMPLED)
    response = run(handle(engine, TABLE, sent))
    assert (response.status, response.upstream) == (200, "10.0.0.9:8080")
    span = sent.span
    assert isinstance(span, Span)
    events = [(name, dict(attributes)) for _, name, attributes in map(event_of, span.all_events())]
    assert [name for name, _ in events] == ["attempt", "attempt", "fallback", "attempt"]
    first = events[0][1]
    assert (first["error.type"], first["tulle.retried"]) == ("connect", True)
    assert "connection refused" in str(first["tulle.reason"])
    fell = events[2][1]
    assert fell["tulle.upstream_cluster"] == "outbound|8080||cache.default.svc.cluster.local"
    assert fell["http.response.status_code"] == 503
    assert events[3][1]["tulle.upstream_endpoint"] == "10.0.0.9:8080"


def test_the_mesh_s_own_answer_has_a_span_with_its_reason() -> None:
    engine = traced(build_engine(workload("v1"), {}, Upstreams()), sampling=1.0)
    sent = request(headers=[])  # no context: sampled by the mesh's rate (100 % here)
    response = run(handle(engine, TABLE, sent))
    assert response.status == 503
    done = finished("outbound", sent, response, 1.0, 2.0, 0)
    assert done.span is not None
    assert done.span.parent_id == ""  # a new trace
    assert (done.flag, done.reason) == (response.flag, response.reason)
    assert "no healthy endpoint" in done.reason


def test_an_unsampled_request_has_no_span_and_passes_the_decision_on() -> None:
    upstreams = Upstreams()
    seen = Seen()
    upstreams.behaviour["10.0.0.1:8080"] = seen.recording(status(200))  # type: ignore[assignment]
    engine = traced(build_engine(workload("v1"), {"v1": [("10.0.0.1", 8080)]}, upstreams))
    fresh = request()
    assert run(handle(engine, TABLE, fresh)).status == 200
    assert fresh.span is NOT_SAMPLED
    assert seen.contexts == [("", "", 0)]  # b3: 0, nothing else
    declined = request(headers=[("traceparent", f"00-{TRACE}-{PARENT}-00")])
    assert run(handle(engine, TABLE, declined)).status == 200
    assert declined.span is None
    assert seen.contexts[1] == (TRACE, PARENT, 0)  # passed on as it came
    assert finished("outbound", declined, Response(200, []), 1.0, 2.0, 0).span is None


def test_a_grpc_call_s_span_has_the_rpc_attributes_and_its_status() -> None:
    """A gRPC call whose answer is UNAVAILABLE in its trailers: the span, as exported (decoded
    with opentelemetry-proto), names the RPC by the current conventions and the older ones, and
    is an error."""

    def unavailable(endpoint: EndpointSpec, sent: Request) -> Response:
        headers = [("content-type", "application/grpc")]
        return Response(200, headers, b"", trailers=[("grpc-status", "14")])

    upstreams = Upstreams({"10.0.0.1:8080": unavailable})
    engine = traced(build_engine(workload("v1"), {"v1": [("10.0.0.1", 8080)]}, upstreams))
    call = Request("POST", "/shop.v1.Auth/Check", "web:8080",
                   [("content-type", "application/grpc"), *SAMPLED], b"", http2=True)  # fmt: skip
    response = run(handle(engine, TABLE, call))
    done = finished("outbound", call, response, 1.0, 2.0, 0)
    assert done.span is not None
    assert done.span.grpc_status == 14
    request = ExportTraceServiceRequest()
    request.ParseFromString(export_request([done], [("service.name", "frontend")]))
    (span,) = request.resource_spans[0].scope_spans[0].spans
    values = {kv.key: kv.value for kv in span.attributes}
    assert span.name == "shop.v1.Auth/Check"
    assert values["rpc.system.name"].string_value == "grpc"
    assert values["rpc.method"].string_value == "shop.v1.Auth/Check"
    assert values["rpc.service"].string_value == "shop.v1.Auth"
    assert values["rpc.response.status_code"].string_value == "UNAVAILABLE"
    assert values["rpc.grpc.status_code"].int_value == 14
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert span.parent_span_id.hex() == PARENT
