"""A real OTLP/HTTP receiver for tests: a standard-library HTTP server on loopback that decodes
every ``POST /v1/traces`` body as an ``ExportTraceServiceRequest`` (a body that is not one is a
500) and keeps the requests, their headers and their spans. ``hold`` cleared makes each request
wait (a stuck collector); ``status`` is what it answers."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from tulle.control.traces.otlp_messages import ExportTraceServiceRequest, ExportTraceServiceResponse


@dataclass
class Receiver:
    """What the receiver got."""

    port: int = 0
    requests: list[Message] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    hold: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def spans(self) -> list[Any]:
        """Every span received so far (OTLP ``Span`` messages)."""
        with self.lock:
            requests = list(self.requests)
        return [
            span
            for request in requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def services(self) -> list[tuple[str, Any]]:
        """Every span with its resource's ``service.name``."""
        with self.lock:
            requests = list(self.requests)
        found = []
        for request in requests:
            for resource in request.resource_spans:
                names = [a.value.string_value for a in resource.resource.attributes
                         if a.key == "service.name"]  # fmt: skip
                for scope in resource.scope_spans:
                    found += [(names[0] if names else "", span) for span in scope.spans]
        return found

    def clear(self) -> None:
        """Forget what was received; answer 200 at once again."""
        with self.lock:
            self.requests.clear()
            self.headers.clear()
        self.status = 200
        self.hold.set()
        self.arrived.clear()


@contextlib.contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """A running receiver (its port in ``port``), shut down on the way out."""
    state = Receiver()
    state.hold.set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.arrived.set()
            state.hold.wait(30)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)  # raises (a 500 from the server) if not OTLP
            with state.lock:
                state.requests.append(request)
                state.headers.append({k.lower(): v for k, v in self.headers.items()})
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(state.status)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
