"""An HTTP/2 upstream that goes away (GOAWAY) with two requests on the connection: the one it
took finishes, the one above its last stream id fails as refused (safe to retry), and the
connection takes no new stream and closes once idle. The upstream is an h2 server on loopback."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import pytest
from hyperframe.frame import GoAwayFrame

from tests.scenarios.h2c_backend import H2ServerProtocol
from tulle.engine.message import Request, UpstreamError
from tulle.transport.h2pool import H2Upstream


class GoingAwayServer(H2ServerProtocol):
    """Answers stream 1 only after both requests arrived and after a GOAWAY naming stream 1."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[int] = []

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.requests.append(event.stream_id)
        if len(self.requests) == 2:
            self.transport.write(self.conn.data_to_send())
            # GOAWAY first, then the answer. Written by hand: h2 sends nothing after its own
            # GOAWAY (python-hyper/h2#1181), which is what a graceful server must do.
            self.transport.write(GoAwayFrame(0, last_stream_id=1).serialize())
            self.conn.send_headers(1, [(":status", "200"), ("x-served", "yes")], end_stream=True)
        self.transport.write(self.conn.data_to_send())


def test_goaway_finishes_taken_streams_and_refuses_the_rest():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        servers: list[GoingAwayServer] = []

        def serve() -> GoingAwayServer:
            servers.append(GoingAwayServer())
            return servers[-1]

        listener = await loop.create_server(serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        _, upstream = await loop.create_connection(H2Upstream, "127.0.0.1", port)
        closed = asyncio.Event()
        upstream.released = closed.set

        def request() -> Request:
            return Request("GET", "/", f"127.0.0.1:{port}", [], b"", "", True)

        first = loop.create_task(upstream.request(request()))
        second = loop.create_task(upstream.request(request()))
        answer = await asyncio.wait_for(first, 10)
        assert answer.status == 200
        assert ("x-served", "yes") in answer.headers
        with pytest.raises(UpstreamError) as refused:
            await asyncio.wait_for(second, 10)
        assert refused.value.kind == "refused-stream"
        assert "GOAWAY" in str(refused.value)
        assert not upstream.usable  # no new stream on a connection going away
        await asyncio.wait_for(closed.wait(), 10)  # idle: closed
        assert servers[0].requests == [1, 3]
        listener.close()

    asyncio.run(scenario())
