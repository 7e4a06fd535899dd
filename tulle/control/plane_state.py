"""The control plane's state: its parts (config sources, registries, store, CA, tokens, the ADS
server) made in one place, and what it serves from them: the snapshot (rebuilt from the config
in force and the registries), each node's resources and secrets, the push signal. The control
plane is this plus ``changes`` (config and registry changes off the loop), ``in_cluster``
(``--registry kubernetes``) and ``app`` (start, loops, stop)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry

from tulle.api.model import MeshModel
from tulle.api.normalize import build_model
from tulle.control.certificates import CertificateService
from tulle.control.config import ConfigSources
from tulle.control.dashboard_api import DashboardOptions
from tulle.control.leadership import Leadership
from tulle.control.node_auth import NodeAuthorizer, ReplicaTokens
from tulle.control.registry import LocalRegistry
from tulle.control.rotation import RootRotation
from tulle.control.serving import PluginCa, publish_bundle, trust_bundle_secrets
from tulle.control.snapshot import Snapshot, build_snapshot
from tulle.control.store import StateStore
from tulle.control.traces.store import DEFAULT_MAX_SPANS, TraceStore
from tulle.control.translate import Resources, Translator
from tulle.security.ca import CertificateAuthority
from tulle.security.tokens import BootstrapTokens
from tulle.xds.node import NodeInfo
from tulle.xds.server import AdsServer, Connection
from tulle.xds.types import SECRET

if TYPE_CHECKING:
    from tulle.control.kube_ca import ClusterCa
    from tulle.control.kube_config import KubernetesConfig
    from tulle.control.kube_registry import KubernetesRegistry
    from tulle.control.prometheus import PrometheusTraffic
    from tulle.control.telemetry import LocalTraffic
    from tulle.control.traces.forward import OtlpForwarder
    from tulle.control.webhook import WebhookOptions, WebhookServer
    from tulle.kube.webhooks import CaBundleKeeper


class PlaneState:
    """The control plane's parts and the snapshot it serves (``ControlPlane`` is the whole)."""

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
        trace_spans: int = DEFAULT_MAX_SPANS,
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
        self.dashboard = DashboardOptions()  # set by tulle controlplane
        self.traffic: LocalTraffic | PrometheusTraffic | None = None  # the dashboard's figures
        self.traces = TraceStore(trace_spans)  # the built-in trace store (tulle.control.traces)
        self.trace_relay: OtlpForwarder | None = None  # its relay to an OTLP/gRPC collector
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

    def _model(self) -> MeshModel:
        validation = self.config.validation
        if validation is None or validation.model is None:
            return build_model(())
        return validation.model

    def rebuild(self) -> None:
        """Build a new snapshot from the config in force and the registry."""
        endpoints = self.registry.endpoints()
        version = self.snapshot.version + 1
        if self.kube is None:
            self.snapshot = build_snapshot(version, self._model(), endpoints)
            return
        # --registry kubernetes: the cluster's services, endpoints and mesh pods' workloads
        self.snapshot = build_snapshot(
            version,
            self._model(),
            endpoints + self.kube.endpoints(),
            self.kube.services(),
            self.kube.workloads(),
            self.kube.pods(),
            self.kube.localities(),
        )

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
