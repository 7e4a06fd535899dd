"""The ADS client's gRPC call over h2, against a real grpcio server: messages both ways (larger
than HTTP/2's default flow-control window too), the server's status, and connection failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from tulle.xds.grpc_stream import GrpcStream, GrpcStreamError, split_address

ECHO = "/test.Echo/Chat"
REFUSE = "/test.Echo/Refuse"
BIG = 300_000  # bytes: over the 65,535-byte initial window, in both directions


async def _echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for message in requests:
        if message == b"stop":
            return
        yield message[::-1]


async def _refuse(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "node sidecar~x is not 100% welcome")
    yield b""  # pragma: no cover - abort raises


def _passthrough(message: bytes) -> bytes:
    return message


async def with_server(test: Callable[[str], Awaitable[None]]) -> None:
    server = grpc.aio.server()
    handlers = {
        "Chat": grpc.stream_stream_rpc_method_handler(_echo, _passthrough, _passthrough),
        "Refuse": grpc.stream_stream_rpc_method_handler(_refuse, _passthrough, _passthrough),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await test(f"127.0.0.1:{port}")
    finally:
        await server.stop(0)


def test_messages_flow_both_ways_beyond_the_flow_control_window():
    async def test(address: str) -> None:
        call = await GrpcStream.open(address, ECHO)
        big = bytes(range(256)) * (BIG // 256)
        for message in (b"hello", big, b"", b"again"):
            call.send(message)
            async with asyncio.timeout(10):
                assert await call.receive() == message[::-1]
        call.send(b"stop")  # the server ends the call with OK
        with pytest.raises(GrpcStreamError) as ended:
            await asyncio.wait_for(call.receive(), 10)
        assert ended.value.code == "OK"
        call.close()

    asyncio.run(with_server(test))


def test_the_servers_status_and_message_end_the_call():
    async def test(address: str) -> None:
        call = await GrpcStream.open(address, REFUSE)
        call.send(b"hi")
        with pytest.raises(GrpcStreamError) as refused:
            await asyncio.wait_for(call.receive(), 10)
        assert refused.value.code == "PERMISSION_DENIED"
        assert refused.value.message == "node sidecar~x is not 100% welcome"
        with pytest.raises(GrpcStreamError):  # and stays ended
            await asyncio.wait_for(call.receive(), 1)

        unknown = await GrpcStream.open(address, "/test.Echo/Nothing")
        with pytest.raises(GrpcStreamError) as missing:
            await asyncio.wait_for(unknown.receive(), 10)
        assert missing.value.code == "UNIMPLEMENTED"

    asyncio.run(with_server(test))


def test_a_server_that_goes_away_ends_the_call_as_unavailable():
    async def scenario() -> None:
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(_echo, _passthrough, _passthrough)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Echo", {"Chat": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        call = await GrpcStream.open(f"127.0.0.1:{port}", ECHO)
        call.send(b"ping")
        assert await asyncio.wait_for(call.receive(), 10) == b"gnip"
        await server.stop(0)
        with pytest.raises(GrpcStreamError) as gone:
            await asyncio.wait_for(call.receive(), 10)
        # grpcio's stop(0): GOAWAY, then each call ends with its status. The status arrives
        # only because h2 never saw the GOAWAY (it refuses every frame after one).
        assert (gone.value.code, gone.value.message) == ("UNAVAILABLE", "Cancelling all calls")

        with pytest.raises(GrpcStreamError) as refused:
            await GrpcStream.open(f"127.0.0.1:{port}", ECHO)
        assert refused.value.code == "UNAVAILABLE"
        assert "connect" in refused.value.message

    asyncio.run(scenario())


def test_addresses_are_host_and_port():
    assert split_address("tulle-control.tulle-system.svc:15010") == (
        "tulle-control.tulle-system.svc",
        15010,
    )
    assert split_address("[::1]:15010") == ("::1", 15010)
    for bad in ("15010", "host:", "host:port"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            split_address(bad)
