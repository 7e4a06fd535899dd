"""A real OTLP/gRPC receiver for tests: a grpcio server implementing opentelemetry-proto's
TraceService (its generated servicer), as an OpenTelemetry Collector's ``otlp`` receiver
would, keeping every request it is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps what it receives; ``url`` is its endpoint (``http://127.0.0.1:PORT``)."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.url = ""

    def Export(  # noqa: N802 (the generated servicer's name)
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        with self.lock:
            self.requests.append(request)
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        return ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, str, str]]:
        """``(service.name, trace id hex, span id hex)`` of every span received so far."""
        with self.lock:
            found = []
            for request in self.requests:
                for resource_spans in request.resource_spans:
                    service = next(
                        (a.value.string_value for a in resource_spans.resource.attributes
                         if a.key == "service.name"), "",
                    )  # fmt: skip
                    for scope in resource_spans.scope_spans:
                        found += [(service, s.trace_id.hex(), s.span_id.hex()) for s in scope.spans]
            return found


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """A receiver listening on a free loopback port until the block ends."""
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(0).wait()
