"""The snapshot: an immutable view of config and registry that translation reads.

Each change (an apply, a file edit, a registration) builds a new snapshot; translation is a pure
function of a snapshot and a node, so it is cached per snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tulle.api.model import MeshModel, Service, ServicePort
from tulle.control.registry import Endpoint


@dataclass(frozen=True)
class Snapshot:
    """Config (the mesh model) and endpoints at one version."""

    version: int
    model: MeshModel
    endpoints: tuple[Endpoint, ...]
    services: Mapping[str, Service]
    endpoints_by_service: Mapping[str, tuple[Endpoint, ...]]


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
) -> Snapshot:
    """The snapshot of ``model`` and ``endpoints``; ``registry_services`` (Kubernetes Services)
    define hosts and ports too, where the config (a Workload, a ServiceEntry) does not."""
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
    )
