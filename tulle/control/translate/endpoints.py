"""ClusterLoadAssignments: the endpoints of each cluster, from the registry and from ServiceEntry
static endpoints, grouped by locality (each locality weighted, as grpcio requires)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2

from tulle.api.kinds.base import UINT32_MAX
from tulle.api.model import Service, ServicePort
from tulle.control.translate.context import NodeView, Snapshot, is_routable
from tulle.control.translate.names import cluster_name
from tulle.control.translate.protos import uint32


@dataclass(frozen=True)
class Target:
    """One address to send a cluster's traffic to."""

    address: str
    port: int
    labels: dict[str, str]
    weight: int
    locality: str
    healthy: bool
    workload: str = ""


def _targets(snapshot: Snapshot, service: Service, port: ServicePort) -> list[Target]:
    targets = [
        Target(e.address, e.port, dict(e.labels), 1, e.locality, e.healthy, e.workload)
        for e in snapshot.endpoints_by_service.get(service.host, ())
        if e.service_port in (None, port.number)
    ]
    if service.resolution in ("STATIC", "DNS", "DNS_ROUND_ROBIN"):
        for e in service.endpoints:
            ports = dict(e.ports)
            number = int(ports[port.name]) if port.name in ports else None
            targets.append(
                Target(
                    e.address,
                    number or port.target_port or port.number,
                    dict(e.labels),
                    e.weight,
                    e.locality or "",
                    True,
                )
            )
    return targets


def _locality(name: str) -> Any:
    region, _, rest = name.partition("/")
    zone, _, sub_zone = rest.partition("/")
    return base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone)


def _workload_metadata(workload: str) -> Any:
    """``filter_metadata.tulle.workload``: which workload an endpoint belongs to (for the
    destination_workload label of metrics)."""
    metadata = base_pb2.Metadata()
    if workload:
        metadata.filter_metadata["tulle"].update({"workload": workload})
    return metadata


def load_assignment(name: str, targets: list[Target]) -> Any:
    """The ClusterLoadAssignment of cluster ``name``."""
    by_locality: dict[str, list[Target]] = {}
    for target in targets:
        by_locality.setdefault(target.locality, []).append(target)
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for locality, members in sorted(by_locality.items()):
        # The locality's weight is its endpoints' (at most a uint32, as grpcio reads it).
        weight = min(sum(t.weight for t in members), UINT32_MAX)
        group = ec.LocalityLbEndpoints(
            locality=_locality(locality), load_balancing_weight=uint32(weight)
        )
        for target in members:
            group.lb_endpoints.append(
                ec.LbEndpoint(
                    endpoint=ec.Endpoint(
                        address=address_pb2.Address(
                            socket_address=address_pb2.SocketAddress(
                                address=target.address, port_value=target.port
                            )
                        )
                    ),
                    health_status=(
                        health_check_pb2.HEALTHY if target.healthy else health_check_pb2.UNHEALTHY
                    ),
                    load_balancing_weight=uint32(target.weight),
                    metadata=_workload_metadata(target.workload),
                )
            )
        assignment.endpoints.append(group)
    return assignment


def load_assignments(snapshot: Snapshot, view: NodeView) -> dict[str, Any]:
    """The ClusterLoadAssignment of every cluster."""
    result: dict[str, Any] = {}
    for service in snapshot.services.values():
        if not is_routable(service):
            continue
        policy = snapshot.model.destination_policies.get(service.host)
        for port in service.ports:
            targets = _targets(snapshot, service, port)
            name = cluster_name(service.host, port.number)
            result[name] = load_assignment(name, targets)
            for subset in policy.subsets if policy else ():
                wanted = dict(subset.labels).items()
                members = [t for t in targets if wanted <= t.labels.items()]
                name = cluster_name(service.host, port.number, subset.name)
                result[name] = load_assignment(name, members)
    return result
