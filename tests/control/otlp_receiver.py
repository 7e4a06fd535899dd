"""A real OTLP/gRPC receiver for tests: a grpcio server serving OTLP's TraceService/Export
(opentelemetry-proto's messages, :mod:`tulle.control.traces.otlp_messages` says why they are
not imported from its package), as an OpenTelemetry Collector's ``otlp`` receiver would,
keeping every request it is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
from google.protobuf.message import Message

from tulle.control.traces.otlp_messages import (
    EXPORT_METHOD,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class Receiver:
    """Keeps what it receives; ``url`` is its endpoint (``http://127.0.0.1:PORT``)."""

    def __init__(self) -> None:
        self.requests: list[Message] = []
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.url = ""

    def export(self, request: Message, context: grpc.ServicerContext) -> Message:
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
    service, method = EXPORT_METHOD.strip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(
        receiver.export,
        request_deserializer=ExportTraceServiceRequest.FromString,
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(0).wait()
