"""The snapshot: an immutable view of config and registry that translation reads.

Each change (an apply, a file edit, a registration) builds a new snapshot; translation is a pure
function of a snapshot and a node, so it is cached per snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tulle.api.model import MeshModel, Service, ServicePort, Workload
from tulle.control.registry import Endpoint


@dataclass(frozen=True)
class Snapshot:
    """Config (the mesh model) and endpoints at one version."""

    version: int
    model: MeshModel
    endpoints: tuple[Endpoint, ...]
    services: Mapping[str, Service]
    endpoints_by_service: Mapping[str, tuple[Endpoint, ...]]
    workloads: Mapping[tuple[str, str], Workload] = field(default_factory=dict)
    """Every workload by namespace and name: the config's, and the cluster's mesh pods'."""
    pods: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """A cluster pod's workload name, by namespace and pod (its proxy's node names the pod)."""
    pod_localities: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """A cluster pod's locality (region/zone/subzone), by namespace and pod, when known."""

    def workload_of(self, namespace: str, pod: str, name: str) -> Workload | None:
        """The workload a node runs beside: its pod's in the cluster, else the one of the
        config called ``name`` (the pod name less its replica number)."""
        return self.workloads.get((namespace, self.pods.get((namespace, pod), name)))


def _implicit_service(host: str, endpoints: list[Endpoint]) -> Service:
    """A service known only from registered endpoints: its ports are theirs."""
    ports: dict[int, ServicePort] = {}
    for endpoint in endpoints:
        number = endpoint.service_port or endpoint.port
        ports.setdefault(number, ServicePort(number, endpoint.protocol))
    namespace = host.split(".")[1] if host.count(".") >= 2 else "default"
    return Service(
        host=host,
        namespace=namespace,
        ports=tuple(sorted(ports.values(), key=lambda p: p.number)),
        location="MESH_INTERNAL",
        resolution="STATIC",
        origins=(),
    )


def build_snapshot(
    version: int,
    model: MeshModel,
    endpoints: tuple[Endpoint, ...],
    registry_services: tuple[Service, ...] = (),
    registry_workloads: Mapping[tuple[str, str], Workload] = MappingProxyType({}),
    pods: Mapping[tuple[str, str], str] = MappingProxyType({}),
    pod_localities: Mapping[tuple[str, str], str] = MappingProxyType({}),
) -> Snapshot:
    """The snapshot of ``model`` and ``endpoints``; ``registry_services`` (Kubernetes Services)
    define hosts and ports too, where the config (a Workload, a ServiceEntry) does not, and
    ``registry_workloads`` (mesh pods, ``pods`` saying which pod is which) are workloads where
    the config has none of that name."""
    workloads = dict(registry_workloads)
    workloads.update({(w.namespace, w.name): w for w in model.workloads})
    by_service: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_service.setdefault(endpoint.service, []).append(endpoint)
    services = dict(model.services)
    for service in registry_services:
        services.setdefault(service.host, service)
    for host, members in by_service.items():
        if host not in services:
            services[host] = _implicit_service(host, members)
    return Snapshot(
        version=version,
        model=model,
        endpoints=endpoints,
        services=MappingProxyType(services),
        endpoints_by_service=MappingProxyType({h: tuple(e) for h, e in by_service.items()}),
        workloads=MappingProxyType(workloads),
        pods=MappingProxyType(dict(pods)),
        pod_localities=MappingProxyType(dict(pod_localities)),
    )
