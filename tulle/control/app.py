"""The control-plane process: wires config sources, registry, snapshots, translation, the ADS
server and the HTTP API together, and pushes a new snapshot (debounced) after every change.

Changes (apply, delete, register, deregister, edited files) run one at a time in a thread of
their own: parsing and validating a large config takes seconds of CPU, and the event loop that
serves xDS and the API must keep answering meanwhile. The loop only reads what a change
publishes (one reference swapped at its end).

This module starts it (config, CA, the xDS and API listeners, the webhooks), runs its push and
file-watch loops and stops it. Its parts: ``plane_state`` (what it holds and serves: the
snapshot, each node's resources), ``changes`` (changes off the loop) and ``in_cluster``
(``--registry kubernetes``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import TYPE_CHECKING

from tulle.api.findings import Severity
from tulle.control.api import ApiHandler
from tulle.control.auth import ApiAuth
from tulle.control.bodies import MAX_APPLY_BYTES
from tulle.control.certificates import CertificateService
from tulle.control.dashboard_api import DashboardApi
from tulle.control.in_cluster import InCluster
from tulle.control.issued import ISSUED_FILE
from tulle.control.prometheus import PrometheusTraffic
from tulle.control.rotation import RootRotation
from tulle.control.serving import ServingCertificate, open_ca
from tulle.control.sessions import Sessions
from tulle.control.telemetry import LocalTraffic, TrafficSource
from tulle.control.traces.forward import OtlpForwarder
from tulle.control.traces.receiver import ExporterAuth, TraceReceiver
from tulle.security.tokens import ADMIN_TOKEN_FILE, admin_token
from tulle.transport.http_server import serve_http
from tulle.xds.server import start_server

if TYPE_CHECKING:
    from tulle.control.webhook import WebhookOptions

log = logging.getLogger(__name__)

FILE_POLL_SECONDS = 0.5
DEBOUNCE_SECONDS = 0.05
SETTLE_SECONDS = 1.0
"""How long a push waits for changes still being validated, so that a burst makes one push."""

# grpcio's per-call tasks; see _grpc_calls_finished.
_GRPC_CALL_COROUTINES = frozenset({"_schedule_rpc_coro", "_handle_exceptions"})


class ControlPlane(InCluster):
    """Config + registry → snapshots → xDS for every node, and the HTTP API."""

    async def start(self) -> None:
        """Load config, then serve xDS and the API."""
        if self.registry_kind == "kubernetes":
            await self._start_kube()
        self.config.load()
        for finding in self.config.file_findings:  # at their own level: INFO is no warning
            level = logging.INFO if finding.severity == Severity.INFO else logging.WARNING
            log.log(level, "%s", finding.format())
        self.rebuild()
        trust_domain = self._model().settings.trust_domain
        if self.cluster_ca is not None and self.plugin_ca is None:  # the CA's roots: a Secret
            self.ca = await asyncio.to_thread(self.cluster_ca.open, trust_domain)
        else:
            self.ca = open_ca(self.state_dir, trust_domain, self.plugin_ca)
        if self.cluster_ca is not None:
            self.cluster_ca.start(self.ca)
        tokens = self.tokens
        self.signing = signing = CertificateService(
            self.ca,
            self.workloads,
            lambda: self._model().settings.workload_certificate_lifetime,
            self.metrics,
            self.state_dir / ISSUED_FILE,
        )
        self.rotation = RootRotation(
            self.ca, signing, lambda: self.ads.connections, self._bundle_changed
        )
        serving = ServingCertificate(self.ca, self._serving_names())
        exporters = ExporterAuth(
            admin_token(self.state_dir), self.workloads, self.node_auth.insecure_xds
        )
        self.trace_relay = OtlpForwarder(self._trace_collector, self.metrics)
        self.trace_relay.start()
        traces = TraceReceiver(self.traces, exporters, self.metrics, self.trace_relay)
        self._grpc, self.xds_port, secure_port = await start_server(
            self.ads,
            self.host,
            self.xds_port,
            secure=(self.secure_xds_port, serving.credentials()),
            handlers=[signing.handler(), traces.handler()],
        )
        assert secure_port is not None
        self.secure_xds_port = secure_port
        token_file = self.state_dir / ADMIN_TOKEN_FILE
        sessions = Sessions()  # the dashboard's browser logins
        auth = ApiAuth(admin_token(self.state_dir), tokens, f"in {token_file}", sessions)
        dashboard = DashboardApi(self, sessions, self._start_traffic(), self.dashboard.assets)
        self._http = await serve_http(
            ApiHandler(self, auth, self.metrics, traces, dashboard),
            self.host,
            self.http_port,
            max_body=MAX_APPLY_BYTES,
        )
        self.http_port = self._http.sockets[0].getsockname()[1]
        if self.webhook_options is not None:
            await self._start_webhooks(self.webhook_options)
        self._tasks = [
            asyncio.create_task(self._push_loop()),
            asyncio.create_task(self._watch_loop()),
        ]
        log.info(
            "xDS on %s:%d, secure xDS and the CA on %s:%d, API on http://%s:%d",
            self.host, self.xds_port, self.host, self.secure_xds_port, self.host, self.http_port,
        )  # fmt: skip

    def _start_traffic(self) -> TrafficSource | None:
        """Where the dashboard's traffic figures come from: a Prometheus, the mesh's own
        metrics pages (``tulle up``'s targets file), or nowhere."""
        options = self.dashboard
        if options.prometheus:
            self.traffic = PrometheusTraffic(options.prometheus)
        elif options.scrape_targets is not None:
            local = LocalTraffic(options.scrape_targets)
            local.start()
            self.traffic = local
        return self.traffic

    def _trace_collector(self) -> str | None:
        """The OTLP/gRPC collector the Mesh names, which the trace store relays spans to."""
        settings = self._model().settings
        grpc_collector = settings.tracing_protocol == "grpc" and settings.tracing_endpoint
        return settings.tracing_endpoint if grpc_collector else None

    def _serving_names(self) -> list[str]:
        """The names on the secure xDS port's certificate: the address it listens on and, in a
        cluster, the names of the control plane's Service in its namespace, which injected
        sidecars dial (``tulle-controlplane.tulle-system.svc:15012``) and check."""
        names = [self.host]
        if self.registry_kind == "kubernetes":
            from tulle.kube.install.names import CONTROL_PLANE  # noqa: PLC0415

            base = f"{CONTROL_PLANE}.{self.namespace}.svc"
            names += [base, f"{base}.cluster.local"]
        return names

    async def _start_webhooks(self, options: WebhookOptions) -> None:
        """The admission webhooks' listener; with ``--registry kubernetes``, the keeper of
        their configurations' caBundle."""
        from tulle.control.webhook import WebhookServer  # noqa: PLC0415

        assert self.ca is not None
        self.webhooks = WebhookServer(
            options,
            self.ca,
            self.state_dir,
            lambda: self.known_hosts() | set(self._model().services),
        )
        await self.webhooks.start()
        if self.registry_kind == "kubernetes":
            from tulle.kube.webhooks import CaBundleKeeper  # noqa: PLC0415

            ca = self.ca
            self.ca_bundle = CaBundleKeeper(
                self.kubeconfig, self.kube_context, options.namespace, ca.trust_bundle_pem
            )
            self.ca_bundle.start()

    async def _push_loop(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(DEBOUNCE_SECONDS)
            with contextlib.suppress(TimeoutError):  # changes still running join this push
                await asyncio.wait_for(self._settled.wait(), SETTLE_SECONDS)
            self._changed.clear()
            self.rebuild()
            self.ads.push()

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_SECONDS)
            if await self._change(self.config.poll_files):
                log.info("config files changed; pushing")
                self.changed()

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving, let a change in progress finish, and close the store."""
        await self.leadership.stop()  # a leader hands over first
        if self.kube_config is not None:
            await self.kube_config.stop()
        if self.kube is not None:
            await self.kube.stop()
        if self.ca_bundle is not None:
            await self.ca_bundle.stop()
        if self.cluster_ca is not None:
            await self.cluster_ca.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.traffic is not None:
            await self.traffic.stop()
        if self.trace_relay is not None:
            await self.trace_relay.stop()
        for task in [*self._tasks, *self._kube_tasks]:
            task.cancel()
        for task in [*self._tasks, *self._kube_tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            self._http.close()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            await _grpc_calls_finished(grace + 1.0)
        shutdown = functools.partial(self._changes.shutdown, wait=True, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, shutdown)
        self.store.close()


async def _grpc_calls_finished(timeout: float) -> None:
    """Wait for the per-call tasks grpcio leaves a step short of done when ``stop()`` returns.

    ``grpc.aio.Server.stop`` returns once the core has ended every call, but each call's tasks
    still have their last step to take on the loop. If the loop ends first, ``asyncio.run``
    cancels them and grpcio logs each as "Exception not handled ... CancelledError" with a
    traceback. They finish within a few turns of the loop; ``timeout`` only bounds a surprise."""
    calls = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", None) in _GRPC_CALL_COROUTINES
    ]
    if calls:
        await asyncio.wait(calls, timeout=timeout)
