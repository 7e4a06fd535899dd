"""A DestinationRule's tcpKeepalive on opaque TCP (a ``tcp`` route's pipe, as for the corpus's
Redis rule): the sidecar's upstream socket of the pipe has SO_KEEPALIVE and the times given,
read back with getsockopt on the real connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from tests.aio import until
from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.connection_options import TcpKeepaliveSpec
from tulle.proxy.detecting import DetectingFront
from tulle.proxy.in_flight import InFlight
from tulle.proxy.transparent import Plan, TransparentOutbound

CLUSTER = "outbound|6379||redis.default.svc.cluster.local"


def test_a_tcp_pipes_upstream_socket_gets_the_clusters_keepalive() -> None:
    async def scenario() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def database(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            await reader.read()
            writer.close()

        server = await asyncio.start_server(database, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pipes: list[TransparentOutbound] = []

        def plan(destination: tuple[str, int] | None) -> Plan:
            return ("tcp", EndpointSpec("127.0.0.1", port), "redis", CLUSTER)

        def no_http() -> DetectingFront:
            raise AssertionError("TCP only")

        wanted = {CLUSTER: TcpKeepaliveSpec(time=300, interval=20, probes=4)}

        def make() -> TransparentOutbound:
            pipes.append(TransparentOutbound(plan, no_http, None, InFlight(), keepalive=wanted.get))
            return pipes[-1]

        sidecar = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
        _, app = await asyncio.open_connection("127.0.0.1", sidecar.sockets[0].getsockname()[1])
        await until(lambda: bool(accepted) and pipes[0].pipe is not None)
        pipe = pipes[0].pipe
        assert pipe is not None
        await until(lambda: pipe.upstream is not None)
        assert pipe.upstream is not None
        sock = pipe.upstream.get_extra_info("socket")
        read: Callable[[int, int], int] = sock.getsockopt
        assert (
            read(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            read(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            read(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            read(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        ) == (1, 300, 20, 4)
        app.close()
        await until(lambda: pipe.closed)
        for writer in accepted:
            writer.close()
        sidecar.close()
        server.close()
        await sidecar.wait_closed()
        await server.wait_closed()
        await asyncio.sleep(0.01)  # let the closed transports' callbacks run

    asyncio.run(scenario())
