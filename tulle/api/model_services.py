"""The mesh model's services and workloads: ports, static endpoints, readiness checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tulle.api.model_base import Pairs, ResourceRef


@dataclass(frozen=True)
class ServicePort:
    """A port of a service: the number clients call, its protocol, and the endpoint's port."""

    number: int
    protocol: str
    name: str | None = None
    target_port: int | None = None


@dataclass(frozen=True)
class StaticEndpoint:
    """An endpoint written in config (ServiceEntry ``endpoints``)."""

    address: str
    ports: Pairs = ()
    labels: Pairs = ()
    weight: int = 1
    locality: str | None = None
    service_account: str | None = None


@dataclass(frozen=True)
class Service:
    """A service of the mesh: a fully qualified host with ports, from Workloads or a
    ServiceEntry."""

    host: str
    namespace: str
    ports: tuple[ServicePort, ...]
    location: Literal["MESH_INTERNAL", "MESH_EXTERNAL"]
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]
    origins: tuple[ResourceRef, ...]
    addresses: tuple[str, ...] = ()
    endpoints: tuple[StaticEndpoint, ...] = ()
    workload_selector: Pairs | None = None
    export_to: frozenset[str] | None = None
    """The namespaces that see this service (a ServiceEntry's ``exportTo``); None: all."""
    subject_alt_names: tuple[str, ...] = ()
    """A ServiceEntry's ``subjectAltNames``: identities its servers may present over mTLS,
    beside its endpoints' service accounts."""
    traffic_distribution: str = ""
    """A Kubernetes Service's ``trafficDistribution`` (PreferClose, PreferSameZone,
    PreferSameNode; "" none): locality-prioritized failover without a DestinationRule."""

    def visible_in(self, namespace: str) -> bool:
        """Whether callers in ``namespace`` see this service."""
        return self.export_to is None or namespace in self.export_to


@dataclass(frozen=True)
class ReadinessCheck:
    """How a replica is known to be ready: ``http`` GET of ``path``, or a ``tcp`` connect."""

    kind: Literal["http", "tcp"]
    path: str | None
    port: str | None
    period: float
    timeout: float


@dataclass(frozen=True)
class WorkloadPort:
    """A port a workload serves."""

    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Workload:
    """A local-mode program: its service, how to run it, and how it joins the mesh."""

    name: str
    namespace: str
    service_host: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: Pairs
    replicas: int
    ports: tuple[WorkloadPort, ...]
    service_account: str
    labels: Pairs
    mesh: Literal["sidecar", "library", "proxyless", "none"]
    readiness: ReadinessCheck | None
    origin: ResourceRef
    locality: str = ""  # region[/zone[/subzone]], "" when not known

    @property
    def label_map(self) -> dict[str, str]:
        """The workload's labels (``app`` included) as a dict."""
        return dict(self.labels)
