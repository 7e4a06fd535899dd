"""The control-plane process: wires config sources, registry, snapshots, translation, the ADS
server and the HTTP API together, and pushes a new snapshot (debounced) after every change.

Changes (apply, delete, register, deregister, edited files) run one at a time in a thread of
their own: parsing and validating a large config takes seconds of CPU, and the event loop that
serves xDS and the API must keep answering meanwhile. The loop only reads what a change
publishes (one reference swapped at its end)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry

from tulle.api.model import MeshModel, Service
from tulle.api.normalize import build_model
from tulle.control.api import ApiHandler
from tulle.control.auth import ApiAuth
from tulle.control.bodies import MAX_APPLY_BYTES
from tulle.control.certificates import CertificateService
from tulle.control.config import ChangeResult, ConfigSources
from tulle.control.issued import ISSUED_FILE
from tulle.control.leadership import Leadership
from tulle.control.node_auth import NodeAuthorizer, ReplicaTokens
from tulle.control.registry import Endpoint, LocalRegistry
from tulle.control.rotation import RootRotation
from tulle.control.serving import (
    PluginCa,
    ServingCertificate,
    open_ca,
    publish_bundle,
    trust_bundle_secrets,
)
from tulle.control.snapshot import Snapshot, build_snapshot
from tulle.control.store import ResourceKey, StateStore
from tulle.control.translate import Resources, Translator
from tulle.security.ca import CertificateAuthority
from tulle.security.tokens import ADMIN_TOKEN_FILE, BootstrapTokens, admin_token
from tulle.transport.http_server import serve_http
from tulle.xds.node import NodeInfo
from tulle.xds.server import AdsServer, Connection, start_server
from tulle.xds.types import SECRET

if TYPE_CHECKING:
    from tulle.control.kube_ca import ClusterCa
    from tulle.control.kube_config import KubernetesConfig
    from tulle.control.kube_registry import KubernetesRegistry
    from tulle.control.webhook import WebhookOptions, WebhookServer
    from tulle.kube.webhooks import CaBundleKeeper

log = logging.getLogger(__name__)

FILE_POLL_SECONDS = 0.5
DEBOUNCE_SECONDS = 0.05
KUBE_SYNC_SECONDS = 30.0
"""How long ``--registry kubernetes`` waits at start for the cluster's first full read."""
SETTLE_SECONDS = 1.0
"""How long a push waits for changes still being validated, so that a burst makes one push."""

# grpcio's per-call tasks; see _grpc_calls_finished.
_GRPC_CALL_COROUTINES = frozenset({"_schedule_rpc_coro", "_handle_exceptions"})

T = TypeVar("T")


class ControlPlane:
    """Config + registry → snapshots → xDS for every node, and the HTTP API."""

    def __init__(
        self,
        paths: Sequence[Path],
        state_dir: Path,
        host: str = "127.0.0.1",
        xds_port: int = 15010,
        http_port: int = 15014,
        secure_xds_port: int = 15012,
        plugin_ca: PluginCa | None = None,
        insecure_xds: bool = False,
        registry: str = "local",
        kubeconfig: Path | None = None,
        kube_context: str | None = None,
        webhook: WebhookOptions | None = None,
        namespace: str = "tulle-system",
    ) -> None:
        self.host, self.xds_port, self.http_port = host, xds_port, http_port
        self.secure_xds_port = secure_xds_port
        self.plugin_ca = plugin_ca
        self.metrics = CollectorRegistry()
        self.ca: CertificateAuthority | None = None
        self.signing: CertificateService | None = None  # the CA's signing service, once started
        self.rotation: RootRotation | None = None  # the CA's root rotation, once started
        self.state_dir = state_dir
        self.store = StateStore(state_dir)
        self.registry = LocalRegistry(
            self.store.endpoints(), self.store.save_endpoint, self.store.delete_endpoint
        )
        self.registry_kind, self.kubeconfig, self.kube_context = registry, kubeconfig, kube_context
        self.kube: KubernetesRegistry | None = None  # --registry kubernetes, once started
        self.namespace = namespace  # the control plane's own (its CA Secret is there)
        self.cluster_ca: ClusterCa | None = None  # the CA's Secret and root-cert ConfigMaps
        self.leadership = Leadership(self.metrics)  # with --registry kubernetes: the Lease
        self._unreported: Any = None  # the cluster config's verdicts a follower did not write
        self.kube_config: KubernetesConfig | None = None  # and the cluster's config
        self._kube_tasks: set[asyncio.Task[None]] = set()
        self.webhook_options = webhook
        self.webhooks: WebhookServer | None = None  # --webhook-port, once started
        self.ca_bundle: CaBundleKeeper | None = None  # and --registry kubernetes
        self.config = ConfigSources(list(paths), self.store, known_hosts=self.known_hosts)
        self.translator = Translator()
        self.tokens = BootstrapTokens(state_dir)
        # Who a workload's credential proves it is, for the CA and xDS: bootstrap tokens, and
        # with --registry kubernetes service-account tokens too (set in _start_kube).
        self.workloads: ReplicaTokens = self.tokens
        self.node_auth = NodeAuthorizer(self.tokens, insecure_xds)
        self.ads = AdsServer(self, self.node_auth)
        self.snapshot: Snapshot = build_snapshot(0, build_model(()), ())
        self._changed = asyncio.Event()
        self._changes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tulle-changes")
        self._in_flight = 0
        self._applies = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpc.aio.Server | None = None
        self._http: asyncio.Server | None = None

    def known_hosts(self) -> set[str]:
        """The hosts the registries define (config may route to them)."""
        return {e.service for e in self.registry.endpoints()} | (
            self.kube.hosts() if self.kube is not None else set()
        )

    # --- the snapshot ---------------------------------------------------------------------

    def _model(self) -> MeshModel:
        validation = self.config.validation
        if validation is None or validation.model is None:
            return build_model(())
        return validation.model

    def rebuild(self) -> None:
        """Build a new snapshot from the config in force and the registry."""
        endpoints = self.registry.endpoints()
        services: tuple[Service, ...] = ()
        if self.kube is not None:  # --registry kubernetes: the cluster's services and endpoints
            endpoints, services = endpoints + self.kube.endpoints(), self.kube.services()
        version = self.snapshot.version + 1
        self.snapshot = build_snapshot(version, self._model(), endpoints, services)

    def node_resources(self, node: NodeInfo) -> Resources:
        """Every resource for ``node`` under the current snapshot, the trust bundle included."""
        resources = self.translator.resources(self.snapshot, node)
        if self.ca is None:
            return resources
        return {**resources, SECRET: trust_bundle_secrets(self.ca)}

    @property
    def connections(self) -> dict[int, Connection]:
        """The nodes connected over ADS."""
        return self.ads.connections

    def secrets(self, node: NodeInfo) -> list[dict[str, Any]]:
        """What the node's certificate and trust bundle are (no key: it never left the node)."""
        if self.signing is None:
            return []
        issued = self.signing.issued.get(f"{node.pod}.{node.namespace}")
        default: dict[str, Any] = {"name": "default", **(issued or {"issued": "none yet"})}
        return [default, {"name": "ROOTCA", "roots": self.signing.trust_bundle()}]

    def services_of(self, namespace: str, service_account: str) -> frozenset[str]:
        """The service hosts the config's Workloads of that identity serve."""
        return frozenset(
            w.service_host
            for w in self._model().workloads
            if w.namespace == namespace and w.service_account == service_account
        )

    def resources(self, node: NodeInfo, type_url: str) -> Any:
        """:class:`~tulle.xds.server.ResourceSource` for the ADS server."""
        if type_url == SECRET:  # the trust bundle (ROOTCA), pushed to every node on rotation
            return {} if self.ca is None else trust_bundle_secrets(self.ca)
        return self.translator.resources(self.snapshot, node).get(type_url, {})

    def _bundle_changed(self) -> None:
        """A rotation step changed the trust bundle: publish it (file, and ADS to every node)."""
        assert self.ca is not None
        publish_bundle(self.state_dir, self.ca)
        if self.webhooks is not None:
            self.webhooks.bundle_changed()
        if self.ca_bundle is not None:
            self.ca_bundle.bundle_changed()
        if self.cluster_ca is not None:
            self.cluster_ca.bundle_changed()
        self.changed()

    def changed(self) -> None:
        """Something changed: push a new snapshot soon (a burst makes one push)."""
        self._changed.set()

    @property
    def push_pending(self) -> bool:
        """A change is waiting for its snapshot (nodes cannot be current until it is built)."""
        return self._changed.is_set()

    # --- changes --------------------------------------------------------------------------

    async def _change(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(*args)`` in the changes thread (one change at a time, off the loop)."""
        self._in_flight += 1
        self._settled.clear()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._changes, work, *args)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._settled.set()

    @property
    def applies_in_flight(self) -> int:
        """Applies waiting for, or in, validation."""
        return self._applies

    async def apply(self, text: str, filename: str) -> ChangeResult:
        """Apply YAML text; see :meth:`ConfigSources.apply`."""
        self._applies += 1
        try:
            result = await self._change(self.config.apply, text, filename)
        finally:
            self._applies -= 1
        if result.accepted and (result.created or result.updated):
            self.changed()
        return result

    async def delete(self, key: ResourceKey) -> ChangeResult:
        """Delete an applied resource."""
        result = await self._change(self.config.delete, key)
        if result.accepted:
            self.changed()
        return result

    async def register(self, endpoint: Endpoint) -> bool:
        """Register (or update) an endpoint."""
        changed = await self._change(self._register, endpoint)
        if changed:
            self.changed()
        return changed

    async def deregister(self, endpoint_id: str) -> bool:
        """Deregister an endpoint."""
        removed = await self._change(self._deregister, endpoint_id)
        if removed:
            self.changed()
        return removed

    def _register(self, endpoint: Endpoint) -> bool:
        changed = self.registry.register(endpoint)
        if changed:
            self.config.revalidate()
        return changed

    def _deregister(self, endpoint_id: str) -> bool:
        removed = self.registry.deregister(endpoint_id)
        if removed:
            self.config.revalidate()
        return removed

    # --- running --------------------------------------------------------------------------

    async def _start_kube(self) -> None:
        """``--registry kubernetes``: watch the cluster and wait (a while) for its first full
        read, so the config is validated against the cluster's services."""
        # lightkube (and its HTTP client) load only with --registry kubernetes.
        from tulle.control import kube_identity  # noqa: PLC0415
        from tulle.control.kube_config import KubernetesConfig  # noqa: PLC0415
        from tulle.control.kube_registry import KubernetesRegistry  # noqa: PLC0415

        self.kube = kube = KubernetesRegistry(self.kubeconfig, self.kube_context)
        from tulle.control.kube_ca import ClusterCa  # noqa: PLC0415

        self.cluster_ca = ClusterCa(
            self.kubeconfig, self.kube_context, self.namespace, self.state_dir
        )
        self.cluster_ca.may_write = lambda: self.leadership.leading
        self.cluster_ca.on_reload = self._bundle_changed  # the leader rotated the roots
        self.leadership.listen(self._leadership_changed)
        self.leadership.start(self.kubeconfig, self.kube_context, self.namespace)
        self.workloads = kube_identity.connect(self.tokens, self.kubeconfig, self.kube_context)
        self.node_auth.tokens = self.workloads
        self.kube_config = cluster_config = KubernetesConfig(kube.client)
        cluster_config.on_update = self._cluster_config_updated
        cluster_config.start()
        first = asyncio.Event()
        kube.on_update = first.set
        kube.start()
        try:
            await asyncio.wait_for(first.wait(), KUBE_SYNC_SECONDS)
        except TimeoutError:
            log.warning(
                "Kubernetes registry (%s): no full read within %.0fs; starting without it, it "
                "joins when the watches catch up", kube.client.server, KUBE_SYNC_SECONDS,
            )  # fmt: skip
        kube.take()
        kube.on_update = self._kube_updated

    def _kube_updated(self) -> None:
        """A burst of cluster changes ended: one change (and so one push) for all of it."""
        task = asyncio.create_task(self._take_kube_update())
        self._kube_tasks.add(task)
        task.add_done_callback(self._kube_tasks.discard)

    def _cluster_config_updated(self) -> None:
        """The cluster's config resources changed (a burst of them): judge them as one change."""
        task = asyncio.create_task(self._take_cluster_config())
        self._kube_tasks.add(task)
        task.add_done_callback(self._kube_tasks.discard)

    async def _take_cluster_config(self) -> None:
        assert self.kube_config is not None
        documents = self.kube_config.take()
        if documents is None:
            return
        result = await self._change(self.config.set_cluster, documents)
        if result.changed:
            log.info("config from the cluster changed; pushing")
            self.changed()
        if not self.leadership.leading:  # the leader writes status and Events
            self._unreported = result
            return
        await self.kube_config.report(result)

    def _leadership_changed(self, leading: bool) -> None:
        """This replica now leads (or no longer does): the leader's writes start here."""
        if self.cluster_ca is not None:
            self.cluster_ca.leading_changed(leading)
        if leading and self._unreported is not None and self.kube_config is not None:
            result, self._unreported = self._unreported, None
            task = asyncio.create_task(self.kube_config.report(result))
            self._kube_tasks.add(task)
            task.add_done_callback(self._kube_tasks.discard)

    async def _take_kube_update(self) -> None:
        if await self._change(self._kube_take):
            self.changed()
        if self.cluster_ca is not None and self.kube is not None:
            self.cluster_ca.namespaces_changed(self.kube.namespaces())

    def _kube_take(self) -> bool:
        assert self.kube is not None
        hosts = self.kube.hosts()
        if not self.kube.take():
            return False
        if self.kube.hosts() != hosts:  # config is checked against the hosts, nothing else
            self.config.revalidate()
        return True

    async def start(self) -> None:
        """Load config, then serve xDS and the API."""
        if self.registry_kind == "kubernetes":
            await self._start_kube()
        self.config.load()
        for finding in self.config.file_findings:
            log.warning("%s", finding.format())
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
        serving = ServingCertificate(self.ca, [self.host])
        self._grpc, self.xds_port, secure_port = await start_server(
            self.ads,
            self.host,
            self.xds_port,
            secure=(self.secure_xds_port, serving.credentials()),
            handlers=[signing.handler()],
        )
        assert secure_port is not None
        self.secure_xds_port = secure_port
        token_file = self.state_dir / ADMIN_TOKEN_FILE
        auth = ApiAuth(admin_token(self.state_dir), tokens, token_hint=f"in {token_file}")
        self._http = await serve_http(
            ApiHandler(self, auth, self.metrics),
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
