"""The sidecar's HTTP/2 front end in-process, on the in-process benchmark's transport: when a
streamed answer (gRPC server streaming) is recorded as ending."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from benchmarks.proxy_inprocess import KeptTransport
from tests.proxy.test_front_limits import PREFACE, client_encoder, get_frame
from tulle.engine.message import ByteStream, Request, Response
from tulle.engine.trace_setup import WorkloadTracing
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.obs.trace_export import SpanExporter
from tulle.obs.tracing import SERVER, Span
from tulle.proxy.h2_front import H2Front
from tulle.proxy.http_front import Done
from tulle.proxy.in_flight import InFlight
from tulle.proxy.recording import Destination, Recorder


class TimedTransport(KeptTransport):
    """Keeps what is written, and when."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def write(self, data: bytes) -> None:
        self.times.append(time.time())
        super().write(data)

    def get_write_buffer_size(self) -> int:
        return 0  # the client reads all at once


def _streamed(request: Request, destination: Destination, done: Done) -> Any:
    request.span = Span("ab" * 16, "cd" * 8, "", SERVER)  # sampled: its record is kept
    body = ByteStream()
    body.push(b"\x00\x00\x00\x00\x02hi")
    body.finish()
    trailers = [("grpc-status", "0")]
    done(Response(200, [("content-type", "application/grpc")], body, trailers=trailers))
    return lambda: None


def test_a_streamed_http2_answer_is_recorded_as_ending_before_its_last_frame():
    """Its recorded end (its server span's, its access log entry's) is taken before the last
    frame (the trailers) is written, not when the request is recorded after it: a caller can
    read that frame and record its own span at once, and a server span must end within it."""
    exporter = SpanExporter("http://127.0.0.1:9", [("service.name", "web")])  # not started
    tracing = WorkloadTracing("http://127.0.0.1:9", [])
    tracing.exporter = exporter
    recorder = Recorder(AccessLog(io.StringIO()), MeshMetrics("web"))
    recorder.traces = tracing
    transport = TimedTransport()

    async def main() -> None:
        front = H2Front("inbound", _streamed, recorder, InFlight())
        front.connection_made(transport)  # type: ignore[arg-type]
        front.data_received(PREFACE + get_frame(1, client_encoder()))
        deadline = time.monotonic() + 10
        while not exporter.records and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    asyncio.run(main())
    (done,) = exporter.records
    assert done.status == 200
    assert done.started <= done.ended <= transport.times[-1]
