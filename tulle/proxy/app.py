"""The proxy process: the xDS client feeds the engine; front ends and the admin listener serve;
SIGTERM drains (stop accepting, finish in-flight requests within the grace period, exit)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tulle.engine.compile import compile_config
from tulle.engine.matching import ConfigError
from tulle.engine.message import Request, Response
from tulle.engine.outbound import Engine
from tulle.proxy.access_log import AccessLog
from tulle.proxy.admin import AdminHandler
from tulle.proxy.http_front import serve_http1
from tulle.proxy.metrics import ProxyMetrics
from tulle.transport.http_server import serve_http
from tulle.transport.pool import Http1Pool
from tulle.xds import types
from tulle.xds.client import Resources, XdsClient
from tulle.xds.node import parse_node_id

log = logging.getLogger(__name__)

HTTP_PROXY_ROUTES = "http_proxy"


class Proxy:
    """A sidecar: config over ADS, the engine, and its listeners."""

    def __init__(
        self,
        xds_address: str,
        node_id: str,
        admin_port: int = 15000,
        http_proxy_port: int | None = None,
        host: str = "127.0.0.1",
        access_log: AccessLog | None = None,
    ) -> None:
        self.node = parse_node_id(node_id)
        self.pool = Http1Pool()
        self.engine = Engine(self.pool.send)
        self.xds = XdsClient(xds_address, node_id, self.accept)
        self.metrics = ProxyMetrics(self.node.workload)
        self.log = access_log or AccessLog()
        self.host = host
        self.admin_port = admin_port
        self.http_proxy_port = http_proxy_port
        self.draining = False
        self.in_flight: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.Server] = []
        self.stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def accept(self, resources: Resources, version: str) -> str | None:
        """Compile a candidate config; install it, or say why not (the NACK reason)."""
        try:
            config = compile_config(
                version,
                resources[types.ROUTE].values(),
                resources[types.CLUSTER].values(),
                resources[types.ENDPOINT].values(),
            )
        except ConfigError as error:
            return str(error)
        self.engine.update(config)
        return None

    async def handle_http_proxy(self, request: Request) -> Response:
        """A request from the app through the HTTP forward proxy."""
        started = time.monotonic()
        response = await self.engine.handle(HTTP_PROXY_ROUTES, request)
        body = response.body if isinstance(response.body, bytes) else b""
        self.metrics.record(request, response, (time.monotonic() - started) * 1000, len(body))
        return response

    async def start(self) -> None:
        """Connect to the control plane and open the listeners."""
        self.log.start()
        self._tasks.append(asyncio.create_task(self.xds.run()))
        admin = await serve_http(AdminHandler(self), "127.0.0.1", self.admin_port)
        self.admin_port = admin.sockets[0].getsockname()[1]
        self.servers.append(admin)
        if self.http_proxy_port is not None:
            front = await serve_http1(
                "http_proxy",
                self.handle_http_proxy,
                self.log,
                self.host,
                self.http_proxy_port,
                self.in_flight,
            )
            self.http_proxy_port = front.sockets[0].getsockname()[1]
            self.servers.append(front)

    def start_drain(self) -> None:
        """Stop accepting new connections on the traffic listeners."""
        self.draining = True
        for server in self.servers[1:]:
            server.close()

    def quit(self) -> None:
        """Stop now."""
        self.stopped.set()

    async def drain_and_stop(self, grace: float) -> None:
        """Drain, wait up to ``grace`` for in-flight requests, then stop everything."""
        self.start_drain()
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self.servers:
            server.close()
        self.pool.close()
        self.log.stop()
