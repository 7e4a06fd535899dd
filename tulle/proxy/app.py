"""The proxy process: the xDS client feeds the engine; front ends, the admin listener (loopback)
and the read-only stats listener serve; SIGTERM drains (stop accepting, finish in-flight requests
within the grace period, exit).

This module opens the listeners and runs, drains and stops the sidecar. The ``Proxy`` class
is built up by mechanism, one module each: ``core`` (its parts and the config from xDS) →
``dispatch`` (where each request goes) → ``tunnels`` (Upgrade) → ``listeners`` (what the
transparent listeners make of a connection) → ``app``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from tulle.proxy.admin import AdminHandler, SidecarView, StatsHandler
from tulle.proxy.admin_guard import default_token_path, remove_token_file, write_token_file
from tulle.proxy.detecting import DetectingFront
from tulle.proxy.dispatch import HTTP_PROXY_ROUTES
from tulle.proxy.h2_front import H2Front
from tulle.proxy.http_front import Http1Front
from tulle.proxy.listeners import Listeners
from tulle.transport.http_server import listening_port, serve_http

# Connections the kernel queues for a listener before it is accepted: the kernel's maximum, as
# Envoy's listeners (asyncio's default of 100 filled on a starved machine in the soak).
BACKLOG = socket.SOMAXCONN
SWEEP_INTERVAL = 1.0  # seconds between two applications of the connections' timeouts

__all__ = ["HTTP_PROXY_ROUTES", "Proxy"]


class Proxy(Listeners):
    """A sidecar: config over ADS, the engine, and its listeners."""

    async def start(self) -> None:
        """Connect to the control plane and open the listeners."""
        self.log.start()
        self._tasks.append(asyncio.create_task(self.xds.run()))
        if self.certificates is not None:
            self._tasks.append(asyncio.create_task(self.certificates.run()))
        loop = asyncio.get_running_loop()
        self._sweep()
        view = SidecarView(self.readiness, self.metrics.exposition, self.xds, self.engine,
                           self.pool, self.start_drain, self.quit, self.tap)  # fmt: skip
        admin = await serve_http(
            AdminHandler(view, self.admin_guard), self.admin_host, self.admin_port
        )
        self.admin_port = listening_port(admin)
        self.listeners.append(admin)
        token_file = (
            Path(self.admin_token_file)
            if self.admin_token_file
            else default_token_path(self.node.pod, self.node.namespace, self.admin_port)
        )
        write_token_file(token_file, self.admin_guard.token)
        self.admin_guard.listening(self.admin_host, self.admin_port, token_file)
        if self.stats_port is not None:
            stats = await serve_http(
                StatsHandler(self.readiness, self.metrics.exposition),
                self.stats_host,
                self.stats_port,
            )
            self.stats_port = listening_port(stats)
            self.listeners.append(stats)
        if self.http_proxy_port is not None:
            tunnel = self.tunneler(lambda _: HTTP_PROXY_ROUTES)

            def http_proxy_front() -> DetectingFront:
                return DetectingFront(
                    lambda: Http1Front(
                        "http_proxy",
                        self.dispatch_http_proxy,
                        self.outbound_recorder,
                        self.in_flight,
                        False,
                        tunnel,
                        self.limits,
                    ),
                    lambda dst: H2Front(
                        "http_proxy",
                        self.dispatch_http_proxy,
                        self.outbound_recorder,
                        self.in_flight,
                        dst,
                        self.limits,
                    ),
                    self.in_flight,
                    header_timeout=self.limits.header_timeout,
                )

            front = await loop.create_server(
                http_proxy_front, self.host, self.http_proxy_port, backlog=BACKLOG
            )
            self.http_proxy_port = listening_port(front)
            self.servers.append(front)
        if self.outbound_port is not None:
            outbound = await loop.create_server(
                self._transparent_outbound, "0.0.0.0", self.outbound_port, backlog=BACKLOG
            )
            self.servers.append(outbound)
        if self.inbound_port is not None:
            inbound = await loop.create_server(
                self._inbound_connection, "0.0.0.0", self.inbound_port, backlog=BACKLOG
            )
            self.servers.append(inbound)

    def _sweep(self) -> None:
        """Every second: each open connection applies its header and idle timeouts."""
        self.in_flight.sweep(self.limits.tick())
        self.sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def readiness(self) -> str | None:
        """Why the sidecar should get no new traffic (draining, no config or no first
        workload certificate yet), or None."""
        if self.draining:
            return "DRAINING"
        if not self.xds.ready.is_set():
            return "waiting for config from the control plane"
        certificates = self.certificates
        if certificates is not None and certificates.current is None:
            # As Envoy warms its listeners until their secrets arrive: ready means able to
            # speak mTLS. (Later, an expired certificate fails requests with the reason.)
            return f"waiting for a workload certificate: {certificates.problem()}"
        return None

    def start_drain(self) -> None:
        """Stop accepting new connections on the traffic listeners; tell the open ones to
        finish what they were asked and close (HTTP/1.1: ``Connection: close`` on the last
        response, idle ones after DRAIN_IDLE; HTTP/2: GOAWAY)."""
        self.draining = True
        for server in self.servers:
            server.close()
        self.in_flight.drain()

    def quit(self) -> None:
        """Stop now."""
        self.stopped.set()

    async def drain_and_stop(self, grace: float) -> None:
        """Drain, wait up to ``grace`` for in-flight requests and open connections, then stop
        everything."""
        self.start_drain()
        await self.in_flight.wait(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in (*self.servers, *self.listeners):
            server.close()
        if self.admin_guard.token_file is not None:
            remove_token_file(self.admin_guard.token_file, self.admin_guard.token)
        if self.sweeper is not None:
            self.sweeper.cancel()
        self.pool.close()
        self.log.stop()
        await asyncio.to_thread(self.tracing.stop)  # the spans still queued
