"""What a translator needs to know about the node it translates for."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tulle.api.model import Pairs, Service, Workload
from tulle.control.snapshot import Snapshot
from tulle.xds.node import Mode


@dataclass(frozen=True)
class NodeView:
    """The parts of a node that change its resources: mode, namespace, workload labels and
    locality."""

    mode: Mode
    namespace: str
    labels: Pairs = ()
    workload: str = ""
    locality: str = ""  # the caller's region/zone/subzone, for locality load balancing

    def sees_short_name(self, service: Service) -> bool:
        """A bare service name (``catalog``) resolves only within the service's namespace."""
        return service.namespace == self.namespace


def default_port(service: Service) -> int | None:
    """The port a name without ``:port`` means: the service's first port."""
    return service.ports[0].number if service.ports else None


def client_names(service: Service, view: NodeView) -> tuple[str, ...]:
    """Every name a client on ``view`` may use for ``service`` (without port)."""
    host = service.host
    suffix = ".svc.cluster.local"
    if not host.endswith(suffix):
        return (host,)
    short = host[: -len(suffix)]
    names = [host, f"{short}.svc", short]
    if view.sees_short_name(service):
        names.append(short.split(".")[0])
    return tuple(names)


def http_ports(service: Service) -> tuple[int, ...]:
    """The ports of ``service`` that carry HTTP (HTTP/1.1, HTTP/2, gRPC)."""
    return tuple(p.number for p in service.ports if p.protocol not in {"TCP", "TLS"})


def is_routable(service: Service) -> bool:
    """Wildcard ServiceEntry hosts have no single name to route by."""
    return not service.host.startswith("*")


def visible_services(snapshot: Snapshot, view: NodeView) -> Iterator[Service]:
    """The services a node's namespace sees: a ServiceEntry's ``exportTo`` hides its hosts
    from the other namespaces (they get no cluster, route or listener for them)."""
    namespace = view.namespace
    return (s for s in snapshot.services.values() if s.visible_in(namespace))


def own_workload(snapshot: Snapshot, view: NodeView) -> Workload | None:
    """The Workload a sidecar or library node runs beside, or a proxyless node serves."""
    return snapshot.workloads.get((view.namespace, view.workload))


__all__ = [
    "NodeView",
    "Snapshot",
    "client_names",
    "default_port",
    "http_ports",
    "is_routable",
    "visible_services",
]
