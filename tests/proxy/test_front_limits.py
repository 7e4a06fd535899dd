"""The front ends' limits in-process, on a transport that keeps what is written: the HTTP/2
control-frame flood of a client that does not read, the rapid-reset rule, the header and idle
timeouts (driven through ``expire`` with a chosen clock, so no test waits for them)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import h2.config
import h2.connection
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame

from benchmarks.proxy_inprocess import KeptTransport
from tulle.engine.message import Request, Response
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.proxy.h2_front import H2Front
from tulle.proxy.http_front import Done, Http1Front
from tulle.proxy.in_flight import InFlight
from tulle.proxy.limits import FrontLimits
from tulle.proxy.recording import Destination, Recorder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


class UnreadTransport(KeptTransport):
    """A client that reads nothing: what is written stays in the write buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def can_write_eof(self) -> bool:
        return False  # a refusal closes at once (no lingering close to wait for)

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data in self.written)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Never:
    """A dispatcher whose requests are never answered (the upstream is slow)."""

    def __init__(self) -> None:
        self.dispatched: list[Request] = []
        self.cancelled = 0

    def __call__(self, request: Request, destination: Destination, done: Done) -> Any:
        self.dispatched.append(request)

        def cancel() -> None:
            self.cancelled += 1

        return cancel


def recorder() -> Recorder:
    return Recorder(AccessLog(io.StringIO()), MeshMetrics("caller"))


def goaways(transport: KeptTransport) -> list[int]:
    """The error codes of the GOAWAY frames written."""
    data = b"".join(transport.written)
    codes = []
    position = 0
    while position + 9 <= len(data):
        frame, length = Frame.parse_frame_header(memoryview(data[position : position + 9]))
        if isinstance(frame, GoAwayFrame):
            frame.parse_body(memoryview(data[position + 9 : position + 9 + length]))
            codes.append(frame.error_code)
        position += 9 + length
    return codes


def h2_front(limits: FrontLimits | None = None, dispatch: Any = None) -> tuple[H2Front, Any]:
    transport = UnreadTransport()
    front = H2Front("outbound", dispatch or Never(), recorder(), InFlight(), None, limits)
    front.connection_made(transport)  # type: ignore[arg-type]
    front.data_received(PREFACE)
    return front, transport


def test_a_ping_flood_from_a_client_that_does_not_read_gets_enhance_your_calm():
    async def main() -> None:
        front, transport = h2_front(FrontLimits(max_unread_control_frames=1000))
        pings = b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(999))
        front.data_received(pings)
        assert not transport.closed  # within the limit
        front.data_received(PingFrame(0, opaque_data=b"x" * 8).serialize() * 2)
        assert transport.closed
        assert goaways(transport)[-1] == 0xB  # ENHANCE_YOUR_CALM

    asyncio.run(main())


def test_pings_from_a_client_that_reads_are_answered_without_limit():
    async def main() -> None:
        front, transport = h2_front(FrontLimits(max_unread_control_frames=10))
        for i in range(50):
            transport.written.clear()  # the client read everything
            front.data_received(PingFrame(0, opaque_data=b"%08d" % i).serialize())
        assert not transport.closed

    asyncio.run(main())


def client_encoder() -> Any:
    """An HPACK encoder for one client connection (its table follows the connection)."""
    return h2.connection.H2Connection(h2.config.H2Configuration()).encoder


def get_frame(stream_id: int, encoder: Any) -> bytes:
    """A client's HEADERS frame for ``GET /`` on ``stream_id``, ending the stream."""
    block = encoder.encode(
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"web")]
    )
    return HeadersFrame(stream_id, block, flags=["END_HEADERS", "END_STREAM"]).serialize()


def _request_and_reset(stream_id: int, encoder: Any) -> bytes:
    return get_frame(stream_id, encoder) + RstStreamFrame(stream_id, error_code=8).serialize()


def test_rapid_reset_is_told_to_calm_down_and_nothing_is_dispatched():
    async def main() -> None:
        dispatch = Never()
        front, transport = h2_front(FrontLimits(premature_reset_streams=100), dispatch)
        encoder = client_encoder()
        front.data_received(b"".join(_request_and_reset(1 + 2 * i, encoder) for i in range(99)))
        assert not transport.closed
        front.data_received(_request_and_reset(199, encoder) + _request_and_reset(201, encoder))
        assert transport.closed
        assert goaways(transport)[-1] == 0xB
        await asyncio.sleep(0)  # the streams' tasks had their turn: each was cancelled unseen
        assert dispatch.dispatched == []

    asyncio.run(main())


def test_a_stream_reset_after_dispatch_is_cancelled_upstream():
    async def main() -> None:
        dispatch = Never()
        front, _ = h2_front(dispatch=dispatch)
        front.data_received(get_frame(1, client_encoder()))
        while not dispatch.dispatched:
            await asyncio.sleep(0)
        front.data_received(RstStreamFrame(1, error_code=8).serialize())
        assert dispatch.cancelled == 1
        for _ in range(10):  # the stream's task ends on its next turn, recorded as gone
            if not front.served:
                break
            await asyncio.sleep(0)
        assert front.served == {}

    asyncio.run(main())


def test_an_idle_http2_connection_goes_away_after_the_idle_timeout():
    async def main() -> None:
        front, transport = h2_front(FrontLimits(idle_timeout=60))
        front.expire(front.idle_since + 59)
        assert not transport.closed
        front.expire(front.idle_since + 61)
        assert transport.closed
        assert goaways(transport) == [0]

    asyncio.run(main())


def _answer_at_once(request: Request, destination: Destination, done: Done) -> Any:
    done(Response(200, [], b"ok"))
    return lambda: None


def test_a_slow_head_gets_408_and_an_idle_connection_closes():
    async def main() -> None:
        limits = FrontLimits(header_timeout=10, idle_timeout=60)
        slow = Http1Front("outbound", _answer_at_once, recorder(), InFlight(), limits=limits)
        transport = UnreadTransport()
        slow.connection_made(transport)  # type: ignore[arg-type]
        slow.data_received(b"GET / HTTP/1.1\r\nHo")
        slow.expire(slow.head_since + 9)
        assert not transport.closed
        slow.expire(slow.head_since + 11)
        assert transport.closed
        assert transport.written[-1].startswith(b"HTTP/1.1 408 ")

        idle = Http1Front("outbound", _answer_at_once, recorder(), InFlight(), limits=limits)
        transport = UnreadTransport()
        idle.connection_made(transport)
        idle.data_received(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        assert transport.written[-1].startswith(b"HTTP/1.1 200 OK")
        idle.expire(idle.idle_since + 59)
        assert not transport.closed
        idle.expire(idle.idle_since + 61)
        assert transport.closed

    asyncio.run(main())


def test_a_client_goaway_lets_its_open_streams_finish_then_closes():
    async def main() -> None:
        held = Never()
        front, transport = h2_front(dispatch=held)
        request = get_frame(1, client_encoder())
        front.data_received(request + GoAwayFrame(0, last_stream_id=0).serialize())
        while not held.dispatched:
            await asyncio.sleep(0)
        assert not transport.closed  # the stream opened before the GOAWAY is answered first
        served = front.served[1]
        assert served.answer is not None
        served.answer.set_result(Response(200, [], b"late"))
        while not transport.closed:
            await asyncio.sleep(0)
        assert b"late" in b"".join(transport.written)
        assert held.cancelled == 0

    asyncio.run(main())


def _answer_h2(request: Request, destination: Destination, done: Done) -> Any:
    done(Response(200, [], b"ok"))
    return lambda: None


def test_a_long_lived_http2_connection_keeps_a_bounded_record_of_closed_streams():
    # h2 kept up to 65,536 closed streams per connection (~10 MB after 100,000 gRPC calls on
    # one channel, found by the soak): the record must stay small however many streams pass.
    async def main() -> None:
        front, transport = h2_front(dispatch=_answer_h2)
        encoder = client_encoder()
        for batch in range(20):
            frames = b"".join(get_frame(1 + 2 * (batch * 100 + i), encoder) for i in range(100))
            front.data_received(frames)
            while front.served:
                await asyncio.sleep(0)
            transport.written.clear()  # the client reads its answers
        assert not transport.closed
        assert front.conn.open_inbound_streams == 0
        assert len(front.conn._closed_streams) <= 256  # 2,000 streams went through

    asyncio.run(main())
