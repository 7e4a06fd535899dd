"""The API server's connections (tulle.transport.http_server, as the control plane runs it): a
client that sends nothing, or a request a byte at a time, is disconnected after the request
timeout; a request being answered is never cut by it."""

from __future__ import annotations

import asyncio

import pytest

from tulle.transport.http_server import Request, Response, serve_http, text_response

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 0.5


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Read until the server closes; True when it did (within the test's bound)."""
    return await asyncio.wait_for(reader.read(), 60) == b""


def test_idle_and_trickling_clients_are_disconnected():
    async def main() -> tuple[bool, bool, bytes]:
        async def ok(request: Request) -> Response:
            return text_response("ok\n")

        server = await serve_http(ok, "127.0.0.1", 0, timeout=TIMEOUT)
        port = server.sockets[0].getsockname()[1]
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"POST /x HTTP/1.1\r\nHost: cp\r\nContent-Length: 100\r\n\r\nab")
        idle, slow = await asyncio.gather(
            closed_by_server(idle_reader), closed_by_server(slow_reader)
        )
        # a client that asks and asks again is answered every time
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: cp\r\n\r\n")
        first = await reader.readuntil(b"ok\n")
        writer.write(b"GET /b HTTP/1.1\r\nHost: cp\r\nConnection: close\r\n\r\n")
        second = await asyncio.wait_for(reader.read(), 60)
        for w in (idle_writer, slow_writer, writer):
            w.close()
        server.close()
        return idle, slow, first + second

    idle, slow, answers = asyncio.run(main())
    assert idle
    assert slow
    assert answers.count(b"HTTP/1.1 200 OK") == 2


def test_a_request_being_answered_is_not_cut_by_the_timeout():
    async def main() -> bytes:
        release = asyncio.Event()

        async def slow(request: Request) -> Response:
            await release.wait()
            return text_response("done\n")

        server = await serve_http(slow, "127.0.0.1", 0, timeout=TIMEOUT)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: cp\r\nConnection: close\r\n\r\n")
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_server(idle_reader)  # the timeout has passed for both ...
        release.set()  # ... and the slow answer still arrives
        answer = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        idle_writer.close()
        server.close()
        return answer

    answer = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"done\n")
