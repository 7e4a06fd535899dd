"""A cluster's connection options on real loopback connections: TCP keepalive read back from the
upstream socket with getsockopt (HTTP/1.1 and HTTP/2 pools), an HTTP/1.1 request sent upstream
as HTTP/2 (the h2 upgrade), and HTTP/2 PINGs: answered, the connection stays; unanswered, it is
closed and its requests fail saying why."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import h2.config
import h2.connection
import h2.events

from tests.aio import until
from tests.transport.test_pool import upstream
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.connection_options import PingSpec, TcpKeepaliveSpec
from tulle.engine.message import Request, Response, UpstreamError
from tulle.transport.pool import Http1Pool

KEEPALIVE = TcpKeepaliveSpec(time=41, interval=7, probes=3)


class H2Server(asyncio.Protocol):
    """Answers each request with 200 and the protocol it came over; h2 answers PINGs itself.
    ``silent``: reads everything and never writes (a peer gone quiet)."""

    def __init__(self, silent: bool = False) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.silent = silent
        self.pings = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.silent:
            self.conn.initiate_connection()
            self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self.silent:
            return
        assert self.transport is not None
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.PingReceived):
                self.pings += 1
            if isinstance(event, h2.events.RequestReceived):
                headers = [(":status", "200"), ("x-protocol", "h2")]
                self.conn.send_headers(event.stream_id, headers, end_stream=True)
        self.transport.write(self.conn.data_to_send())


async def h2_server(silent: bool = False) -> tuple[asyncio.Server, int, list[H2Server]]:
    made: list[H2Server] = []

    def factory() -> H2Server:
        made.append(H2Server(silent))
        return made[-1]

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], made


async def stop(pool: Http1Pool, *servers: asyncio.Server, made: list[H2Server]) -> None:
    """Close the pool's connections and the servers' side of them, and wait until closed."""
    pool.close()
    for server_side in made:
        if server_side.transport is not None:
            server_side.transport.close()
    for server in servers:
        server.close()
        await server.wait_closed()
    await asyncio.sleep(0.01)  # let the closed transports' callbacks run


def options_of(sock: socket.socket) -> tuple[int, int, int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def get(http2: bool = False) -> Request:
    return Request("GET", "/", "web", [], http2=http2)


def test_tcp_keepalive_is_set_on_upstream_connections_of_both_pools():
    async def scenario() -> None:
        stop_plain, plain_port, _ = await upstream()
        multiplexed, h2_port, made = await h2_server()
        pool = Http1Pool()
        cluster = ClusterSpec("web", tcp_keepalive=KEEPALIVE)
        answer = await pool.send(EndpointSpec("127.0.0.1", plain_port), cluster, get())
        assert answer.status == 200
        (connection,) = pool.every
        assert connection.transport is not None
        assert options_of(connection.transport.get_extra_info("socket")) == (1, 41, 7, 3)
        grpc = ClusterSpec("grpc", tcp_keepalive=TcpKeepaliveSpec(time=60), http2=True)
        await pool.send(EndpointSpec("127.0.0.1", h2_port), grpc, get())
        (multiplexing,) = [c for held in pool.h2.connections.values() for c in held]
        assert multiplexing.transport is not None
        sock = multiplexing.transport.get_extra_info("socket")
        # The probes and their interval left out: the OS's own (Linux: 75s, 9).
        with open("/proc/sys/net/ipv4/tcp_keepalive_intvl") as intvl:
            interval = int(intvl.read())
        with open("/proc/sys/net/ipv4/tcp_keepalive_probes") as probes:
            count = int(probes.read())
        assert options_of(sock) == (1, 60, interval, count)
        # Without tcpKeepalive, no SO_KEEPALIVE (the OS default).
        stop_bare, bare_port, _ = await upstream()
        await pool.send(EndpointSpec("127.0.0.1", bare_port), ClusterSpec("other"), get())
        (other,) = [c for c in pool.every if c is not connection]
        assert other.transport is not None
        assert options_of(other.transport.get_extra_info("socket"))[0] == 0
        await stop(pool, multiplexed, made=made)
        await stop_plain()
        await stop_bare()

    asyncio.run(scenario())


def test_an_http1_request_goes_upstream_as_http2_when_the_cluster_upgrades():
    async def scenario() -> None:
        server, port, made = await h2_server()
        pool = Http1Pool()
        upgraded = ClusterSpec("web", http2=True)
        answer = await pool.send(EndpointSpec("127.0.0.1", port), upgraded, get(http2=False))
        assert (answer.status, dict(answer.headers).get("x-protocol")) == (200, "h2")
        await stop(pool, server, made=made)

    asyncio.run(scenario())


def test_http2_pings_keep_an_answering_connection_and_close_a_silent_one():
    async def scenario() -> None:
        server, port, made = await h2_server()
        pool = Http1Pool()
        cluster = ClusterSpec("grpc", http2=True, pings=PingSpec(interval=0.02, timeout=5.0))
        endpoint = EndpointSpec("127.0.0.1", port)
        await pool.send(endpoint, cluster, get(http2=True))
        await until(lambda: made[0].pings >= 3)  # answered each time: PINGs go on
        (upstream,) = pool.h2.connections[endpoint.pool_key]
        assert not upstream.closed
        again = await pool.send(endpoint, cluster, get(http2=True))
        assert isinstance(again, Response)

        quiet, quiet_port, quiet_made = await h2_server(silent=True)
        silent = ClusterSpec("quiet", http2=True, pings=PingSpec(interval=0.01, timeout=0.05))
        try:
            await pool.send(EndpointSpec("127.0.0.1", quiet_port), silent, get(http2=True))
        except UpstreamError as error:
            failure = error
        assert (failure.kind, str(failure)) == (
            "reset",
            "upstream did not answer an HTTP/2 PING within 0.05s",
        )
        assert [c.closed for c in pool.h2.connections[f"127.0.0.1:{quiet_port}"]] == [True]
        await stop(pool, server, quiet, made=made + quiet_made)

    asyncio.run(scenario())
