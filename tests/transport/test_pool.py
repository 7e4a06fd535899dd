"""The upstream pool's callback path (``submit``) on real loopback sockets: new connections,
reuse, a connection the upstream closed while idle, and abandoning an attempt; and what a closed
connection leaves behind."""

from __future__ import annotations

import asyncio
import contextlib

from benchmarks.proxy_inprocess import KeptTransport
from tests.aio import until
from tests.cycles import cycle_garbage_of
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec, UpstreamTls
from tulle.engine.message import Request, Response, UpstreamError
from tulle.transport.pool import Exchange, Http1Pool, UpstreamConnection

CLUSTER = ClusterSpec("web")


async def upstream(close_after_response: bool = False, delay: float = 0.0):
    """A tiny HTTP/1.1 server: answers every request with its count; optionally closes the
    connection after answering without saying so (a connection that goes stale)."""
    served: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                served.append(1)
                await asyncio.sleep(delay)
                body = str(len(served)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if close_after_response:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)

    async def stop() -> None:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        for writer in writers:  # until each connection is closed and its transport let go
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return stop, server.sockets[0].getsockname()[1], served


async def submit(
    pool: Http1Pool, port: int, tls: UpstreamTls | None = None
) -> Response | UpstreamError:
    answer: asyncio.Future[Response | UpstreamError] = asyncio.get_running_loop().create_future()
    endpoint = EndpointSpec("127.0.0.1", port, tls=tls)
    pool.submit(endpoint, CLUSTER, Request("GET", "/", "web", []), answer.set_result)
    return await asyncio.wait_for(answer, 5)


def test_submit_opens_then_reuses_a_connection():
    async def scenario() -> None:
        stop, port, _ = await upstream()
        pool = Http1Pool()
        first, second = await submit(pool, port), await submit(pool, port)
        assert isinstance(first, Response)

        assert first.body == b"1"
        assert isinstance(second, Response)

        assert second.body == b"2"
        assert pool.opened == 1
        pool.close()
        await stop()

    asyncio.run(scenario())


def test_an_idle_connection_is_reused_only_for_the_tls_it_was_opened_with():
    # A config that turns an endpoint's mTLS on (or changes the identity it must present) must
    # not send the next request down a connection opened under the old terms. (This pool has no
    # mTLS material, so both connections are plain text; what counts is that one is not reused.)
    async def scenario() -> None:
        stop, port, _ = await upstream()
        pool = Http1Pool()
        mtls = UpstreamTls("outbound_.8080_._.payment", frozenset({"spiffe://td/ns/a/sa/b"}), ())
        assert isinstance(await submit(pool, port), Response)
        assert isinstance(await submit(pool, port, mtls), Response)
        assert pool.opened == 2
        other = UpstreamTls(mtls.sni, frozenset({"spiffe://td/ns/a/sa/c"}), ())
        assert isinstance(await submit(pool, port, other), Response)
        assert pool.opened == 3
        assert isinstance(await submit(pool, port, mtls), Response)
        assert pool.opened == 3  # the same terms again: reused
        pool.close()
        await stop()

    asyncio.run(scenario())


def test_a_connection_closed_while_idle_is_replaced_without_an_error():
    async def scenario() -> None:
        stop, port, served = await upstream(close_after_response=True)
        pool = Http1Pool()
        assert isinstance(await submit(pool, port), Response)
        await until(lambda: not pool.every)  # the upstream has closed the idle connection
        answer = await submit(pool, port)
        assert isinstance(answer, Response)

        assert answer.status == 200
        assert len(served) == 2
        assert pool.opened == 2
        pool.close()
        await stop()

    asyncio.run(scenario())


def test_an_abandoned_attempt_never_calls_back():
    async def scenario() -> None:
        stop, port, _ = await upstream(delay=0.2)
        pool = Http1Pool()
        assert isinstance(await submit(pool, port), Response)  # an idle connection now
        calls: list[object] = []
        abandon = pool.submit(
            EndpointSpec("127.0.0.1", port), CLUSTER, Request("GET", "/", "web", []), calls.append
        )
        abandon()
        await until(lambda: not pool.every)  # closed: no answer can come on it now
        assert calls == []
        assert pool.idle.get(f"127.0.0.1:{port}", []) == []  # the connection was closed
        pool.close()
        await stop()

    asyncio.run(scenario())


def test_the_pool_lets_go_of_each_connection_as_it_closes():
    async def scenario() -> None:
        stop, port, _ = await upstream(close_after_response=True)
        pool = Http1Pool()
        for _ in range(5):
            assert isinstance(await submit(pool, port), Response)
            # The upstream closes each connection after its answer; the pool lets go of it.
            await until(lambda: not pool.every)
        assert pool.opened == 5
        await stop()
        stop, port, _ = await upstream()  # one that keeps its connections open
        assert isinstance(await submit(pool, port), Response)
        assert len(pool.every) == 1
        pool.close()
        await until(lambda: not pool.every)
        await stop()

    asyncio.run(scenario())


def test_a_refused_connection_is_an_upstream_error():
    async def scenario() -> None:
        stop, port, _ = await upstream()
        await stop()
        answer = await submit(Http1Pool(), port)
        assert isinstance(answer, UpstreamError)

        assert answer.kind == "connect"

    asyncio.run(scenario())


def test_a_closed_upstream_connection_leaves_no_reference_cycle():
    """A connection's objects (its response reader and parser among them) must go when it
    closes, not wait for the cycle collector. (A reader replaced after a HEAD's answer is left
    to the collector: it may be replaced while its parser is still running.)"""

    async def exchange(connection: UpstreamConnection) -> None:
        waiter: asyncio.Future[Exchange]
        waiter = asyncio.get_running_loop().create_future()
        connection.begin(False, waiter)
        connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        head, body, _ = await waiter
        assert (head.status, body) == (200, b"ok")

    async def one_connection() -> None:
        connection = UpstreamConnection()
        connection.connection_made(KeptTransport())  # type: ignore[arg-type]
        await exchange(connection)
        connection.used += 1
        await exchange(connection)
        connection.connection_lost(None)

    assert asyncio.run(cycle_garbage_of(one_connection, 20)) == 0
