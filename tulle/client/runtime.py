"""The library's side of the mesh in one process: a background thread runs the xDS client (node
mode ``library``) and compiles each config once; every event loop that sends requests gets its
own engine and connection pool, and new config is handed to each on its own loop."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import prometheus_client
import uvloop

from tulle.client.admin import LibraryAdmin, new_admin
from tulle.client.inbound_tls import InboundTls
from tulle.client.settings import Settings
from tulle.codec.paths import BASE
from tulle.engine.access_log_config import access_log_setting
from tulle.engine.cluster_stats import ClusterCollector
from tulle.engine.compile import compile_resources
from tulle.engine.inbound import InboundPolicy, inbound_policies, path_normalization
from tulle.engine.matching import ConfigError
from tulle.engine.outbound import Engine, EngineConfig
from tulle.engine.trace_setup import WorkloadTracing, node_resource
from tulle.engine.tracing_config import tracing_settings
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.obs.tap import Tap, TapCollector
from tulle.security.renewal import CertificateKeeper
from tulle.security.tokens import read_token_file
from tulle.transport.http_server import listening_port, serve_http
from tulle.transport.mtls import MeshTls
from tulle.transport.pool import Http1Pool
from tulle.xds import types
from tulle.xds.client import Resources, XdsClient
from tulle.xds.grpc_stream import close_connections
from tulle.xds.node import NodeInfo, parse_node_id
from tulle.xds.workload_ca import workload_certificates


@dataclass
class Binding:
    """The engine and pool of one event loop, and whether config has reached it."""

    loop: asyncio.AbstractEventLoop
    engine: Engine
    pool: Http1Pool
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class MeshRuntime:
    """The process's mesh: config from the control plane, engines per event loop, metrics and
    the access log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node: NodeInfo = parse_node_id(settings.node_id)
        self.metrics = MeshMetrics(self.node.workload)
        self.metrics.registry.register(
            ClusterCollector(lambda: [b.engine for b in list(self._bindings.values())])
        )
        self.log = AccessLog(enabled=settings.access_log)
        # Spans: to the control plane's trace store (its HTTP API, with the replica's token)
        # unless the Mesh names an OTLP endpoint.
        token = settings.token_file
        self.tracing = WorkloadTracing(
            settings.server,
            node_resource(self.node),
            functools.partial(read_token_file, Path(token)) if token else None,
            self.metrics.registry,
        )
        self.tap = Tap()  # `tulle tap`'s subscribers (served by tulle.client.admin)
        self.metrics.registry.register(TapCollector(self.tap))
        self.config: EngineConfig | None = None
        # The app's ports' inbound policy (for the ASGI/WSGI middleware); its rate-limit
        # buckets are shared by every thread serving the app, under inbound_lock.
        self.inbound: dict[int, InboundPolicy] = {}
        self.paths = BASE  # how the inbound policy normalizes paths (the mesh's setting)
        self.inbound_lock = threading.Lock()
        self.nack: str | None = None
        self._complete = False  # every subscribed type has arrived once
        self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._bindings: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Binding] = (
            weakref.WeakKeyDictionary()
        )
        self._xds: XdsClient | None = None
        self.certificates: CertificateKeeper | None = None  # with the secure xDS port
        # Inbound mTLS (tulle.client.uvicorn, tulle.client.wsgi_server), and whether a server
        # of this process terminates it: then the app's endpoint is registered as in the mesh.
        self.inbound_tls = InboundTls(self)
        self.terminates_mtls = False
        self._mtls_listeners: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="tulle-mesh", daemon=True)
        self._metrics_server: object | None = None
        self.admin_port: int | None = None  # the admin listener's, once open
        self._admin_server: asyncio.Server | None = None
        self._admin: LibraryAdmin | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> MeshRuntime:
        """Connect to the control plane (in the background) and serve metrics if asked."""
        started = threading.Event()
        self.loop.call_soon(started.set)
        self._thread.start()
        started.wait(10)
        port, token_file = self.settings.admin_port, self.settings.admin_token_file
        if port is not None and token_file is not None:
            opening = self._open_admin(port, token_file)
            # A port taken or a token file not writable: the caller knows.
            asyncio.run_coroutine_threadsafe(opening, self.loop).result(30)
        if self.settings.metrics_port is not None:
            self._metrics_server = prometheus_client.start_http_server(
                self.settings.metrics_port, registry=self.metrics.registry
            )
        return self

    async def _open_admin(self, port: int, token_file: str) -> None:
        """The admin listener (``GET /tap``) on loopback, its token written first."""
        self._admin = admin = new_admin(self.tap, Path(token_file))
        self._admin_server = server = await serve_http(admin, "127.0.0.1", port)
        admin.port = listening_port(server)
        self.admin_port = admin.port

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._xds = XdsClient(self.settings.xds_address, self.settings.node_id, self._accept)
        settings = self.settings
        if settings.xds_root_cert is not None and settings.token_file is not None:
            self._xds.tls = ssl.create_default_context(cafile=settings.xds_root_cert)
            self._xds.credential = functools.partial(read_token_file, Path(settings.token_file))
            self.certificates = workload_certificates(self._xds)
            self.metrics.use_certificate(MeshTls(self.certificates).certificate)
            self.loop.create_task(self.certificates.run())
        self.loop.create_task(self._xds.run())
        self.loop.create_task(self._watch_ready(self._xds))
        self.loop.call_soon(self.log.start)
        atexit.register(self.log.flush)  # the thread is a daemon: its last entries, at exit
        try:
            self.loop.run_forever()
        finally:
            self.log.stop()
            if self._admin_server is not None:
                self._admin_server.close()
            if self._admin is not None:
                self._admin.remove_token()
            for binding in list(self._bindings.values()):
                if binding.loop is self.loop:
                    binding.pool.close()
            for _ in range(5):  # cancelling grpc's stream starts tasks of its own
                pending = asyncio.all_tasks(self.loop)
                if not pending:
                    break
                for task in pending:
                    task.cancel()
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            # The xDS stream's and the CA calls' TLS connections finish closing first: a loop
            # with a connection still closing cannot be closed.
            self.loop.run_until_complete(close_connections())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _watch_ready(self, xds: XdsClient) -> None:
        """Ready once every subscribed type has arrived (routes and endpoints included)."""
        await xds.ready.wait()
        with self._lock:
            self._complete = True
            bindings = list(self._bindings.values())
        for binding in bindings:
            with contextlib.suppress(RuntimeError):  # that loop has been closed
                binding.loop.call_soon_threadsafe(binding.ready.set)
        self._ready.set()

    def close(self) -> None:
        """Stop: close the xDS stream and the background thread's connections."""
        if not self._thread.is_alive():
            return

        self.loop.call_soon_threadsafe(self.loop.stop)  # _run closes the pools on its way out
        self._thread.join(10)
        self.tracing.stop()
        atexit.unregister(self.log.flush)
        server = self._metrics_server
        if isinstance(server, tuple):  # (server, thread) from prometheus-client
            server[0].shutdown()
            server[0].server_close()

    def declare_mtls_server(self) -> None:
        """A server of this process terminates mTLS for the app (Tulle's uvicorn protocol or WSGI
        server says so when it starts): registrations made from now on, and those made already
        (re-sent, off this thread), say the endpoint is in the mesh when the app has an
        identity."""
        with self._lock:
            if self.terminates_mtls:
                return
            self.terminates_mtls = True
            listeners = list(self._mtls_listeners)
        for listener in listeners:
            listener()

    def on_mtls_server(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when :meth:`declare_mtls_server` is first called."""
        with self._lock:
            self._mtls_listeners.append(listener)

    # --- config -----------------------------------------------------------------------------

    def _accept(self, resources: Resources, version: str) -> str | None:
        """Compile a candidate config; hand it to every engine, or say why not (NACK)."""
        try:
            config = compile_resources(version, resources)
            traced = tracing_settings(resources[types.LISTENER])
            logged = access_log_setting(resources[types.LISTENER])
            inbound = inbound_policies(resources[types.LISTENER], time.monotonic(), self.inbound)
        except ConfigError as error:
            self.nack = str(error)
            return str(error)
        with self.inbound_lock:
            self.inbound = inbound
            self.paths = path_normalization(resources[types.LISTENER])
        tracer = self.tracing.update(traced)
        if logged is not None:  # TULLE_ACCESS_LOG=0 keeps it off whatever the Mesh says
            self.log.configure(logged.enabled and self.settings.access_log, logged.text)
        with self._lock:
            self.config, self.nack = config, None
            bindings = list(self._bindings.values())
        for binding in bindings:
            binding.engine.tracer = tracer  # read by each request's plan: no lock needed
        for binding in bindings:
            with contextlib.suppress(RuntimeError):  # that loop has been closed
                binding.loop.call_soon_threadsafe(binding.engine.update, config)
        return None

    @property
    def connected(self) -> bool:
        """Whether the xDS stream is up now."""
        return self._xds is not None and self._xds.connected

    def wait_ready(self, timeout: float) -> bool:
        """Block until the first config has arrived (True), or ``timeout`` seconds (False)."""
        return self._ready.wait(timeout)

    def binding(self) -> Binding:
        """The engine and pool of the running event loop (made on first use)."""
        loop = asyncio.get_running_loop()
        binding = self._bindings.get(loop)
        if binding is None:
            with self._lock:
                pool = Http1Pool()
                if self.certificates is not None:  # mTLS to endpoints in the mesh
                    mtls = MeshTls(self.certificates)
                    mtls.on_failure = self.metrics.upstream_tls_failed
                    pool.use_mtls(mtls)
                engine = Engine(
                    pool.send, start=pool.submit, source_workload=self.node.workload, tap=self.tap
                )
                engine.tracer = self.tracing.tracer
                binding = Binding(loop, engine, pool)
                if self.config is not None:
                    binding.engine.update(self.config)
                if self._complete:
                    binding.ready.set()
                self._bindings[loop] = binding
        return binding

    def not_ready_reason(self, waited: float | None = None) -> str:
        """Why requests cannot be routed yet (after waiting ``waited`` seconds)."""
        where = f"control plane at {self.settings.xds_address}"
        if self.nack is not None:
            return f"no usable config from the {where}: rejected: {self.nack}"
        state = "connected, no config yet" if self.connected else "not reachable"
        seconds = self.settings.ready_timeout if waited is None else waited
        return f"no config from the {where} after {seconds:g}s ({state}; node {self.node.id})"


class _Process:
    """The one runtime of this process."""

    runtime: MeshRuntime | None = None
    lock = threading.Lock()
    mtls_server = False  # a server of this process terminates mTLS (declare_mtls_server)


def _new_runtime(settings: Settings) -> MeshRuntime:
    runtime = MeshRuntime(settings)
    runtime.terminates_mtls = _Process.mtls_server
    return runtime.start()


def declare_mtls_server() -> None:
    """This process serves its app through Tulle's mTLS server (``tulle.client.uvicorn``
    declares it before uvicorn starts): its runtime, now and after a ``configure()``, registers
    the app's endpoint as in the mesh when it has an identity."""
    with _Process.lock:
        _Process.mtls_server = True
        runtime = _Process.runtime
    if runtime is not None:
        runtime.declare_mtls_server()


def configure(**settings: object) -> MeshRuntime:
    """Start the process's mesh runtime with these settings (see Settings.load), replacing a
    running one."""
    runtime = _new_runtime(Settings.load(**settings))  # type: ignore[arg-type]
    with _Process.lock:
        previous, _Process.runtime = _Process.runtime, runtime
    if previous is not None:
        previous.close()
    return runtime


def get_runtime() -> MeshRuntime:
    """The process's mesh runtime, started from the environment on first use."""
    with _Process.lock:
        if _Process.runtime is None:
            _Process.runtime = _new_runtime(Settings.load())
        return _Process.runtime


def shutdown() -> None:
    """Stop the process's mesh runtime (a later request starts a new one)."""
    with _Process.lock:
        runtime, _Process.runtime = _Process.runtime, None
    if runtime is not None:
        runtime.close()
