"""The sidecar's parts, made in one place: the engine and its upstream pool, the xDS client, the
workload certificates and mTLS, metrics, access log and recorders, the fronts' limits; and the
config it installs from each xDS update (the engine's routes and clusters, the inbound ports'
policies, the TCP ports' clusters). ``Proxy`` (``tulle.proxy.app``) is this plus ``dispatch``,
``tunnels`` and ``listeners``."""

from __future__ import annotations

import asyncio
import functools
import ssl
from pathlib import Path

from tulle.engine.access_log_config import access_log_setting
from tulle.engine.cluster_stats import ClusterCollector
from tulle.engine.compile import compile_resources
from tulle.engine.inbound import InboundPolicy, inbound_policies, path_normalization
from tulle.engine.matching import ConfigError
from tulle.engine.outbound import Engine
from tulle.engine.trace_setup import WorkloadTracing, control_plane_api, node_resource
from tulle.engine.tracing_config import tracing_settings
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.obs.tap import Tap, TapCollector
from tulle.proxy.admin_guard import AdminGuard, is_loopback, new_token
from tulle.proxy.in_flight import InFlight
from tulle.proxy.limits import FrontLimits
from tulle.proxy.recording import Destination, Recorder
from tulle.proxy.tcp_telemetry import TcpTelemetry
from tulle.proxy.transparent import tcp_clusters
from tulle.security.renewal import CertificateKeeper
from tulle.security.tokens import read_token_file
from tulle.transport.mtls import MeshTls
from tulle.transport.pool import Http1Pool
from tulle.xds import types
from tulle.xds.client import Resources, XdsClient
from tulle.xds.node import parse_node_id
from tulle.xds.workload_ca import workload_certificates


class ProxyCore:
    """The sidecar's parts and the config in force (``Proxy`` is the whole sidecar)."""

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
        server: str | None = None,
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
        self.tap = Tap()  # `tulle tap`'s subscribers (the admin listener's GET /tap)
        self.engine = Engine(
            self.pool.send, start=self.pool.submit, source_workload=self.node.workload, tap=self.tap
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
        self.metrics.registry.register(TapCollector(self.tap))
        self.metrics.registry.register(ClusterCollector(lambda: (self.engine,)))
        if self.mtls is not None:
            self.metrics.use_certificate(self.mtls.certificate)
            self.mtls.on_failure = self.metrics.upstream_tls_failed
        self.log = access_log or AccessLog()
        # Access log and metrics, once each request's response is written.
        self.outbound_recorder = Recorder(self.log, self.metrics, tap=self.tap)
        self.inbound_recorder = Recorder(self.log, self.metrics, self.serving, self.tap)
        # Spans (the Mesh's tracing): to the control plane's trace store (its HTTP API,
        # ``server``, with the replica's token) unless the Mesh names an OTLP endpoint.
        self.tracing = WorkloadTracing(
            server or control_plane_api(xds_address),
            node_resource(self.node),
            functools.partial(read_token_file, Path(token_file)) if token_file else None,
            self.metrics.registry,
        )
        self.outbound_recorder.traces = self.inbound_recorder.traces = self.tracing
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
            tracing_settings(resources[types.LISTENER])  # a provider Tulle cannot use: NACK
            logged = access_log_setting(resources[types.LISTENER])
            inbound = inbound_policies(resources[types.LISTENER], self.engine.clock(), self.inbound)
        except ConfigError as error:
            return str(error)
        # All compiled: swap everything in at once.
        self.engine.update(config)
        self.engine.tracer = self.tracing.update(tracing_settings(resources[types.LISTENER]))
        if logged is not None:
            self.log.configure(logged.enabled, logged.text)
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
