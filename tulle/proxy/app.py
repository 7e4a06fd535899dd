"""The proxy process: the xDS client feeds the engine; front ends, the admin listener (loopback)
and the read-only stats listener serve; SIGTERM drains (stop accepting, finish in-flight requests
within the grace period, exit)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tulle.codec.http1 import response_head
from tulle.engine import errors
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.compile import compile_resources
from tulle.engine.errors import MeshError
from tulle.engine.inbound import InboundPolicy, inbound_policies, path_normalization, refusal
from tulle.engine.matching import ConfigError
from tulle.engine.message import Request, Response, UpstreamError, mesh_response
from tulle.engine.outbound import Engine
from tulle.engine.tasks import Cancel, nothing_to_cancel
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.proxy.admin import AdminHandler, SidecarView, StatsHandler
from tulle.proxy.admin_guard import (
    AdminGuard,
    default_token_path,
    is_loopback,
    new_token,
    remove_token_file,
    write_token_file,
)
from tulle.proxy.detecting import DetectingFront
from tulle.proxy.h2_front import H2Front
from tulle.proxy.http_front import Done, Http1Front, Tunneler
from tulle.proxy.in_flight import InFlight
from tulle.proxy.inbound_tls import InboundGate, tcp_admitted
from tulle.proxy.limits import FrontLimits
from tulle.proxy.recording import Destination, Recorder
from tulle.proxy.tcp import TcpPipe
from tulle.proxy.tcp_telemetry import TcpTelemetry
from tulle.proxy.transparent import Plan, TransparentOutbound, tcp_clusters
from tulle.security.renewal import CertificateKeeper
from tulle.security.tokens import read_token_file
from tulle.transport.http_server import listening_port, serve_http
from tulle.transport.mtls import MeshTls, forward_client_cert
from tulle.transport.pool import Http1Pool
from tulle.xds import types
from tulle.xds.client import Resources, XdsClient
from tulle.xds.node import parse_node_id
from tulle.xds.workload_ca import workload_certificates

log = logging.getLogger(__name__)

HTTP_PROXY_ROUTES = "http_proxy"
# Connections the kernel queues for a listener before it is accepted: the kernel's maximum, as
# Envoy's listeners (asyncio's default of 100 filled on a starved machine in the soak).
BACKLOG = socket.SOMAXCONN
SWEEP_INTERVAL = 1.0  # seconds between two applications of the connections' timeouts
PASSTHROUGH = "PassthroughCluster"


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
        outbound_port: int | None = None,
        inbound_port: int | None = None,
        app_port: int | None = None,
        mark: int | None = None,
        admin_host: str = "127.0.0.1",
        limits: FrontLimits | None = None,
        stats_port: int | None = None,
        stats_host: str = "127.0.0.1",
        admin_token_file: str | None = None,
        xds_root_cert: str | None = None,
        token_file: str | None = None,
    ) -> None:
        self.node = parse_node_id(node_id)
        if not is_loopback(admin_host):
            raise ValueError(f"the admin listener binds loopback only, not {admin_host!r}")
        self.admin_host = admin_host
        self.stats_host = stats_host
        self.stats_port = stats_port
        self.admin_token_file = admin_token_file
        # Its port and file are known once the admin listener is bound (see start).
        self.admin_guard = AdminGuard(new_token())
        self.pool = Http1Pool(mark)
        self.outbound_port = outbound_port
        self.inbound_port = inbound_port
        self.app_port = app_port
        self.engine = Engine(
            self.pool.send, start=self.pool.submit, source_workload=self.node.workload
        )
        self.xds = XdsClient(xds_address, node_id, self.accept)
        self.certificates: CertificateKeeper | None = None
        if xds_root_cert is not None and token_file is not None:
            self.xds.tls = ssl.create_default_context(cafile=xds_root_cert)
            self.xds.credential = functools.partial(read_token_file, Path(token_file))
            self.certificates = workload_certificates(self.xds)
        self.mtls = MeshTls(self.certificates) if self.certificates is not None else None
        if self.mtls is not None:
            self.pool.use_mtls(self.mtls)
        self.metrics = MeshMetrics(self.node.workload)
        if self.mtls is not None:
            self.metrics.use_certificate(self.mtls.certificate)
            self.mtls.on_failure = self.metrics.upstream_tls_failed
        self.log = access_log or AccessLog()
        # Access log and metrics, once each request's response is written.
        self.outbound_recorder = Recorder(self.log, self.metrics)
        self.inbound_recorder = Recorder(self.log, self.metrics, self.serving)
        self.tcp = TcpTelemetry(self.metrics, self.log)  # TCP connections' metrics and entries
        self.host = host
        self.admin_port = admin_port
        self.http_proxy_port = http_proxy_port
        self.draining = False
        self.in_flight = InFlight()
        self.limits = limits or FrontLimits()
        self.sweeper: asyncio.TimerHandle | None = None
        self.servers: list[asyncio.Server] = []  # the traffic listeners (a drain closes them)
        self.listeners: list[asyncio.Server] = []  # admin and stats (open until the end)
        self.stopped = asyncio.Event()
        self.inbound: dict[int, InboundPolicy] = {}
        self.tcp_clusters: dict[int, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def accept(self, resources: Resources, version: str) -> str | None:
        """Compile a candidate config; install it, or say why not (the NACK reason)."""
        try:
            config = compile_resources(version, resources)
            inbound = inbound_policies(resources[types.LISTENER], self.engine.clock(), self.inbound)
        except ConfigError as error:
            return str(error)
        # All compiled: swap everything in at once.
        self.engine.update(config)
        self.inbound = inbound
        self.tcp_clusters = tcp_clusters(resources[types.LISTENER])
        self.limits.paths = path_normalization(resources[types.LISTENER])
        return None

    def serving(self, destination: Destination) -> str:
        """The app's service an inbound request reached (empty when the port has no policy)."""
        policy = self.inbound.get(self._inbound_port(destination))
        return policy.service if policy is not None else ""

    def _inbound_port(self, destination: Destination) -> int:
        if destination is not None:
            return destination[1]
        return next(iter(self.inbound), self.app_port or 0)  # not redirected: the first port

    def dispatch_http_proxy(self, request: Request, destination: Destination, done: Done) -> Cancel:
        """A request from the app through the HTTP forward proxy."""
        return self.engine.dispatch(HTTP_PROXY_ROUTES, request, done)

    def dispatch_outbound(self, request: Request, destination: Destination, done: Done) -> Cancel:
        """A request the app sent to ``destination``, redirected here by iptables: routed by
        the route table of the destination port, or passed through when the mesh has none."""
        table = str(destination[1]) if destination else ""
        if table in self.engine.config.route_tables:
            return self.engine.dispatch(table, request, done)
        if destination is not None:
            return self._direct(PASSTHROUGH, destination, request, done)
        reason = "no original destination (the connection was not redirected)"
        done(mesh_response(MeshError(400, "NR", reason)))
        return nothing_to_cancel

    def dispatch_inbound(self, request: Request, destination: Destination, done: Done) -> Cancel:
        """A request for the local app, redirected here by iptables."""
        port = self._inbound_port(destination)
        policy = self.inbound.get(port)
        if policy is not None:
            refused = refusal(policy, request, port, self.engine.clock())
            if refused is not None:
                done(mesh_response(refused, request.is_grpc))
                return nothing_to_cancel
        forward_client_cert(request, self.mtls.identity if self.mtls else None)
        target = ("127.0.0.1", self.app_port or port)
        return self._direct(f"inbound|{port}||", target, request, done)

    def _direct(
        self, cluster: str, target: tuple[str, int], request: Request, done: Done
    ) -> Cancel:
        """One attempt to ``target``, outside the engine (no routes: inbound, passthrough)."""
        endpoint = EndpointSpec(target[0], target[1])

        def answer(outcome: Response | UpstreamError) -> None:
            if isinstance(outcome, UpstreamError):
                error = errors.upstream_failure(f"{outcome.kind} {outcome}", endpoint.key, cluster)
                done(mesh_response(error, request.is_grpc, cluster))
                return
            outcome.upstream, outcome.cluster, outcome.attempts = endpoint.key, cluster, 1
            done(outcome)

        return self.pool.submit(endpoint, ClusterSpec(cluster), request, answer)

    async def start(self) -> None:
        """Connect to the control plane and open the listeners."""
        self.log.start()
        self._tasks.append(asyncio.create_task(self.xds.run()))
        if self.certificates is not None:
            self._tasks.append(asyncio.create_task(self.certificates.run()))
        loop = asyncio.get_running_loop()
        self._sweep()
        view = SidecarView(self.readiness, self.metrics.exposition, self.xds, self.engine,
                           self.pool, self.start_drain, self.quit)  # fmt: skip
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

    def _inbound_connection(self) -> InboundGate:
        """A connection to the inbound listener: mTLS as the port's PeerAuthentication says,
        then the usual inbound protocol."""
        return InboundGate(
            lambda: self.inbound,
            self._inbound_port,
            self.mtls,
            self._transparent_inbound,
            self._inbound_refused,
        )

    def _inbound_refused(self, peer: Any, reason: str) -> None:
        self.metrics.tls_refused(reason)
        self.tcp.gate_refused(peer, reason)
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else peer
        log.warning("inbound connection from %s refused: %s", address, reason)

    def _transparent_inbound(self) -> TransparentOutbound:
        def http() -> DetectingFront:
            return DetectingFront(
                lambda: Http1Front(
                    "inbound",
                    self.dispatch_inbound,
                    self.inbound_recorder,
                    self.in_flight,
                    True,
                    self.inbound_tunnel,
                    self.limits,
                ),
                lambda dst: H2Front(
                    "inbound",
                    self.dispatch_inbound,
                    self.inbound_recorder,
                    self.in_flight,
                    dst,
                    self.limits,
                ),
                self.in_flight,
                transparent=True,
                header_timeout=self.limits.header_timeout,
            )

        return TransparentOutbound(
            self.inbound_plan,
            http,
            self.pool.mark,
            self.in_flight,
            self.tcp,
            admit=self.admit_inbound,
            listener="inbound",
        )

    def admit_inbound(self, transport: asyncio.Transport, destination: Destination) -> bool:
        """The port's network RBAC (AuthorizationPolicy on an opaque TCP port), once per
        connection (see :func:`tcp_admitted`)."""
        port = self._inbound_port(destination)
        return tcp_admitted(self.inbound.get(port), port, transport, destination, self.tcp)

    def inbound_plan(self, destination: tuple[str, int] | None) -> Plan:
        """HTTP for the app's HTTP ports (policy enforced), opaque TCP for its TCP ports."""
        port = destination[1] if destination else next(iter(self.inbound), self.app_port or 0)
        policy = self.inbound.get(port)
        if policy is not None and policy.tcp:
            endpoint = EndpointSpec("127.0.0.1", self.app_port or port)
            return ("tcp", endpoint, policy.service, f"inbound|{port}||")
        return ("http", None, "", "")

    def tunneler(self, table_of: Callable[[Destination], str]) -> Tunneler:
        """Opens Upgrade (WebSocket) tunnels for a listener whose route table ``table_of``
        says: the request goes upstream alone, and only the upstream's 101 (passed on to the
        client here) makes a tunnel; any other answer is the request's response."""

        async def tunnel(
            request: Request, destination: Destination, downstream: asyncio.Transport
        ) -> TcpPipe | Response:
            target = self.engine.tunnel_target(table_of(destination), request)
            if isinstance(target, Response):
                return target
            upstream, endpoint, cluster = target
            state = self.engine.clusters.get(cluster)
            spec = state.spec if state is not None else ClusterSpec(cluster)
            return await self._upgrade(endpoint, spec, upstream, downstream)

        return tunnel

    async def inbound_tunnel(
        self, request: Request, destination: Destination, downstream: asyncio.Transport
    ) -> TcpPipe | Response:
        """An Upgrade request for the app (a WebSocket from another workload): the port's
        policy decides as for any request (principals from the mTLS handshake), then the app's
        101 makes the tunnel."""
        port = self._inbound_port(destination)
        policy = self.inbound.get(port)
        if policy is not None:
            refused = refusal(policy, request, port, self.engine.clock())
            if refused is not None:
                return mesh_response(refused)
        forward_client_cert(request, self.mtls.identity if self.mtls else None)
        endpoint = EndpointSpec("127.0.0.1", self.app_port or port)
        return await self._upgrade(endpoint, ClusterSpec(f"inbound|{port}||"), request, downstream)

    async def _upgrade(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        request: Request,
        downstream: asyncio.Transport,
    ) -> TcpPipe | Response:
        """The Upgrade request to ``endpoint`` on a fresh connection (mutual TLS to an endpoint
        in the mesh, as the pool connects): on its 101 the pipe that takes that connection
        over, TLS layer and all; else the answer."""
        try:
            answer = await self.pool.upgrade(endpoint, cluster, request)
        except UpstreamError as failure:
            reason = f"{failure.kind} {failure}"
            return mesh_response(errors.upstream_failure(reason, endpoint.key, cluster.name))
        if isinstance(answer, Response):
            answer.upstream, answer.cluster = endpoint.key, cluster.name
            return answer
        downstream.write(response_head(101, answer.head.headers, answer.head.reason))
        if answer.rest:
            downstream.write(answer.rest)
        pipe = TcpPipe(downstream, self.pool.mark)
        pipe.adopt(answer.transport)
        return pipe

    def _transparent_outbound(self) -> TransparentOutbound:
        tunnel = self.tunneler(lambda destination: str(destination[1]) if destination else "")

        def http() -> DetectingFront:
            return DetectingFront(
                lambda: Http1Front(
                    "outbound",
                    self.dispatch_outbound,
                    self.outbound_recorder,
                    self.in_flight,
                    True,
                    tunnel,
                    self.limits,
                ),
                lambda dst: H2Front(
                    "outbound",
                    self.dispatch_outbound,
                    self.outbound_recorder,
                    self.in_flight,
                    dst,
                    self.limits,
                ),
                self.in_flight,
                transparent=True,
                header_timeout=self.limits.header_timeout,
            )

        return TransparentOutbound(
            self.outbound_plan, http, self.pool.mark, self.in_flight, self.tcp, self.mtls
        )

    def outbound_plan(self, destination: tuple[str, int] | None) -> Plan:
        """HTTP when the mesh routes the destination port; else TCP to the mesh's TCP service on
        that port (mutual TLS to an endpoint in the mesh: its ``tls``), or through to the
        original destination in plain text."""
        if destination is None:
            return ("refuse", None, "", "")
        port = destination[1]
        if str(port) in self.engine.config.route_tables:
            return ("http", None, "", "")
        cluster = self.tcp_clusters.get(port)
        if cluster is not None:
            state = self.engine.clusters.get(cluster)
            endpoint = state.pick(None, self.engine.clock()) if state else None
            service = cluster.rsplit("|", 1)[-1]
            if endpoint is None:
                return ("refuse", None, service, cluster)
            return ("tcp", endpoint, service, cluster)
        return ("tcp", EndpointSpec(*destination), PASSTHROUGH, PASSTHROUGH)

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
