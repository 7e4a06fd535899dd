"""The sidecar's HTTP/1.1 front end in-process, on the in-process benchmark's transport (it keeps
what is written): what a connection leaves behind once it is closed."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from benchmarks.proxy_inprocess import KeptTransport
from tests.cycles import cycle_garbage_of
from tulle.engine.message import Request, Response
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.proxy.http_front import Done, Http1Front
from tulle.proxy.in_flight import InFlight
from tulle.proxy.recording import Destination, Recorder


def _nothing() -> None:
    pass


def _answer_at_once(request: Request, destination: Destination, done: Done) -> Any:
    done(Response(200, [("content-type", "text/plain")], b"hello"))
    return _nothing


def test_a_closed_connection_leaves_no_reference_cycle():
    """A connection's objects must go when it closes: left to the cycle collector, a
    long-lived connection's would wait for a full collection, and every closed connection
    would add to the collector's work."""
    recorder = Recorder(AccessLog(io.StringIO()), MeshMetrics("caller"))
    in_flight = InFlight()

    async def one_connection() -> None:
        transport = KeptTransport()
        front = Http1Front("outbound", _answer_at_once, recorder, in_flight)
        front.connection_made(transport)  # type: ignore[arg-type]
        front.data_received(b"GET /a HTTP/1.1\r\nHost: web:8080\r\n\r\nGET /b HTTP/1.1\r\n")
        front.connection_lost(None)  # the client went with its second request half sent
        assert len(transport.written) == 1
        assert transport.written[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert transport.written[0].endswith(b"\r\n\r\nhello")

    assert asyncio.run(cycle_garbage_of(one_connection, 20)) == 0
    assert not in_flight.connections
