"""The API server on a real socket: keep-alive, JSON, and a 400 for malformed requests."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tulle.transport.http_server import Request, Response, json_response, serve_http


async def echo(request: Request) -> Response:
    return json_response({"method": request.method, "path": request.path, "q": request.query,
                          "body": request.body.decode()})  # fmt: skip


async def boom(request: Request) -> Response:
    raise RuntimeError("bug")


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    await writer.wait_closed()
    return reply


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_requests_and_keep_alive():
    async def main():
        server = await serve_http(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            first = await client.post("/a%20b?x=1&x=2", content=b"hello")
            second = await client.get("/c")
        server.close()
        await server.wait_closed()
        return first, second

    first, second = asyncio.run(main())
    assert first.json() == {
        "method": "POST",
        "path": "/a b",
        "q": {"x": ["1", "2"]},
        "body": "hello",
    }
    assert second.json()["path"] == "/c"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n",
    ],
)
def test_malformed_requests_get_400(request_bytes):
    async def main():
        server = await serve_http(echo, "127.0.0.1", 0)
        reply = await raw(server.sockets[0].getsockname()[1], request_bytes)
        server.close()
        return reply

    reply = asyncio.run(main())
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"error"' in reply


def test_a_failing_handler_gives_500_and_the_server_lives_on():
    async def main():
        server = await serve_http(boom, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with httpx.AsyncClient() as client:
            replies = [await client.get(f"http://127.0.0.1:{port}/") for _ in range(2)]
        server.close()
        return replies

    import logging

    logging.disable(logging.CRITICAL)
    try:
        replies = asyncio.run(main())
    finally:
        logging.disable(logging.NOTSET)
    assert [r.status_code for r in replies] == [500, 500]
