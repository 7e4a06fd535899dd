"""``GET /tap`` over a real socket (the handler the sidecar's and the library's admin listeners
share): the feed arrives chunked as requests finish; a client that never reads holds the
server's buffers and its tap's bounded one, loses events (counted), and the requests go on;
a client gone ends its subscription."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import httpx

from tulle.engine.message import Request as MeshRequest
from tulle.engine.message import Response as MeshResponse
from tulle.engine.message import finished
from tulle.obs.finished import Finished
from tulle.obs.tap import BUFFER, Tap
from tulle.transport.http_server import Request, Response, json_response, serve_http
from tulle.transport.tap_http import tap_response

PER_CALL = 200  # requests "finished" by each call of /work


def done(path: str, status: int = 200) -> Finished:
    request = MeshRequest("GET", path, "web:8080", [], b"", "10.0.0.1")
    response = MeshResponse(status, [], b"", upstream="127.0.0.1:9000")
    return finished("outbound", request, response, 1.0, 1.5, 100)


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds (60 s at most: generous, for a loaded machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not condition():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


class Server:
    """``/tap`` on ``tap``, and ``/work``, which finishes PER_CALL requests as a proxy would."""

    def __init__(self) -> None:
        self.tap = Tap()

    async def __call__(self, request: Request) -> Response:
        if request.path == "/tap":
            return tap_response(self.tap, request)
        for number in range(PER_CALL):
            if self.tap.active:
                self.tap.publish(done(f"/work/{number}", 503 if number % 2 else 200))
        return json_response({"ok": True})


def test_the_feed_streams_filtered_events_and_a_client_gone_unsubscribes():
    async def main() -> list[dict]:
        handler = Server()
        server = await serve_http(handler, "127.0.0.1", 0)
        try:
            return await read_tap(handler, server.sockets[0].getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()

    events = asyncio.run(main())
    assert {event["status"] for event in events} == {503}  # filtered at the source
    assert [event["path"] for event in events[:2]] == ["/work/1", "/work/3"]


async def read_tap(handler: Server, port: int) -> list[dict]:
    """Half the events of one call of /work, read through a tap of 5xx answers."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        async with client.stream("GET", "/tap", params={"status": "5xx"}) as feed:
            assert feed.headers["transfer-encoding"] == "chunked"
            assert feed.headers["content-type"] == "application/x-ndjson"
            await client.get("/work")
            events = []
            async for line in feed.aiter_lines():
                events.append(json.loads(line))
                if len(events) == PER_CALL // 2:
                    break
        # The client has gone: the server notices at its next chunk and unsubscribes.
        await eventually(lambda: not handler.tap.active)
    return events


def test_a_tap_that_never_reads_loses_events_counted_and_requests_go_on():
    async def main() -> None:
        handler = Server()
        server = await serve_http(handler, "127.0.0.1", 0)
        try:
            await stuck_tap(handler, server.sockets[0].getsockname()[1])
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


async def stuck_tap(handler: Server, port: int) -> None:
    """A tap over a socket that never reads, and requests while it is stuck."""
    with socket.socket() as stuck:  # a small receive buffer, set before connecting
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))  # the kernel completes it: no loop turn needed
        stuck.sendall(b"GET /tap HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await eventually(lambda: handler.tap.active)  # the tap's request has arrived
            (subscriber,) = handler.tap.subscribers
            calls = 0
            while handler.tap.dropped == 0:
                answer = await client.get("/work")
                assert answer.status_code == 200  # the requests go on
                calls += 1
                assert calls < 5_000, "no event was ever dropped"
            # The requests keep going, the tap still stuck: its memory stays bounded and it goes
            # on losing events, counted (the kernel's buffers may take a few more first).
            dropped, calls = handler.tap.dropped, 0
            while handler.tap.dropped == dropped:
                assert (await client.get("/work")).status_code == 200
                assert len(subscriber.events) <= BUFFER
                calls += 1
                assert calls < 5_000, "the stuck tap stopped losing events"
            assert subscriber.dropped == handler.tap.dropped
    await eventually(lambda: not handler.tap.active)  # the stuck client gone, its tap ends
