"""The sidecar's HTTP/1.1 front end in-process, on the in-process benchmark's transport (it keeps
what is written): what a connection leaves behind once it is closed."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from typing import Any

from benchmarks.proxy_inprocess import KeptTransport
from tests.cycles import cycle_garbage_of
from tulle.engine.message import ByteStream, Request, Response
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


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def test_a_streamed_answer_is_recorded_as_ending_after_it_began():
    """A streamed answer's recorded end is the time of its own latest write, whatever it
    writes: a HEAD's streamed answer (its head only) after a GET's on the same connection must
    not end when the GET's did."""
    log = io.StringIO()
    recorder = Recorder(AccessLog(log), MeshMetrics("caller"))

    def streamed(request: Request, destination: Destination, done: Done) -> Any:
        body = ByteStream()
        body.push(b"part")
        body.finish()
        done(Response(200, [("content-type", "text/plain")], body))
        return _nothing

    async def two_requests() -> None:
        transport = KeptTransport()
        front = Http1Front("outbound", streamed, recorder, InFlight())
        front.connection_made(transport)  # type: ignore[arg-type]
        front.data_received(b"GET /a HTTP/1.1\r\nHost: web:8080\r\n\r\n")
        await asyncio.wait_for(_until(lambda: front.answers == 1 and not front.busy), 10)
        first_done = time.time()
        await _until(lambda: time.time() > first_done + 0.005)  # the clock moves on
        front.data_received(b"HEAD /b HTTP/1.1\r\nHost: web:8080\r\n\r\n")
        await asyncio.wait_for(_until(lambda: front.answers == 2 and not front.busy), 10)

    asyncio.run(two_requests())
    recorder.log.flush()
    entries = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [e["method"] for e in entries] == ["GET", "HEAD"]
    assert all(e["duration_ms"] >= 0 for e in entries), entries
