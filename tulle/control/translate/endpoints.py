"""ClusterLoadAssignments: the endpoints of each cluster, from the registry and from ServiceEntry
static endpoints, grouped by locality (each locality weighted, as grpcio requires), with the
priorities and weights the caller's locality gives them (:mod:`.locality`). An endpoint
in the mesh (labelled ``security.istio.io/tlsMode: istio``, as sidecar and library workloads
register) carries Istio's ``envoy.transport_socket_match: {tlsMode: istio}`` metadata, which
picks the mTLS transport socket of an auto-mTLS cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2

from tulle.api.model import Pairs, Service, ServicePort, TrafficSettings
from tulle.control.translate.context import NodeView, Snapshot, is_routable, visible_services
from tulle.control.translate.locality import (
    Group,
    Member,
    by_locality,
    locality_groups,
    service_policy,
    with_topology,
)
from tulle.control.translate.names import cluster_name
from tulle.control.translate.protos import uint32
from tulle.control.translate.zone_aware import zone_aware_groups

TLS_MODE_LABEL = "security.istio.io/tlsMode"
"""The label that marks an endpoint in the mesh (value ``istio``), as Istio's injector sets it."""
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"
"""The endpoint metadata namespace Envoy matches a cluster's ``transport_socket_matches`` on."""


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

    @property
    def in_mesh(self) -> bool:
        """Whether the endpoint runs with a sidecar or the library (it can speak mTLS)."""
        return self.labels.get(TLS_MODE_LABEL) == "istio"


def subset_members(targets: list[Target], labels: Pairs) -> list[Target]:
    """The targets whose labels include ``labels`` (a subset's)."""
    wanted = dict(labels).items()
    return [t for t in targets if wanted <= t.labels.items()]


def targets(snapshot: Snapshot, service: Service, port: ServicePort) -> list[Target]:
    """Where ``port`` of ``service`` is served: registered endpoints, then the ServiceEntry's."""
    found = [
        Target(e.address, e.port, dict(e.labels), 1, e.locality, e.healthy, e.workload)
        for e in snapshot.endpoints_by_service.get(service.host, ())
        if e.service_port in (None, port.number)
    ]
    if service.resolution in ("STATIC", "DNS", "DNS_ROUND_ROBIN"):
        for e in service.endpoints:
            ports = dict(e.ports)
            number = int(ports[port.name]) if port.name in ports else None
            found.append(
                Target(
                    e.address,
                    number or port.target_port or port.number,
                    dict(e.labels),
                    e.weight,
                    e.locality or "",
                    True,
                )
            )
    return found


def _locality(name: str) -> Any:
    region, _, rest = name.partition("/")
    zone, _, sub_zone = rest.partition("/")
    return base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone)


def _metadata(target: Target) -> Any:
    """``filter_metadata.tulle.workload``: which workload an endpoint belongs to (for the
    destination_workload label of metrics); ``envoy.transport_socket_match.tlsMode: istio`` for
    an endpoint in the mesh."""
    metadata = base_pb2.Metadata()
    if target.workload:
        metadata.filter_metadata["tulle"].update({"workload": target.workload})
    if target.in_mesh:
        metadata.filter_metadata[TRANSPORT_SOCKET_MATCH].update({"tlsMode": "istio"})
    return metadata


UNIX_PREFIX = "unix://"


def _address(target: Target) -> Any:
    """An endpoint's Envoy Address: a socket address, or a pipe for a ServiceEntry's Unix
    socket endpoint (``unix:///path``)."""
    if target.address.startswith(UNIX_PREFIX):
        return address_pb2.Address(pipe=address_pb2.Pipe(path=target.address[len(UNIX_PREFIX) :]))
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=target.address, port_value=target.port)
    )


def members(targets: list[Target]) -> list[Member]:
    """``targets`` as locality load balancing sees them (topology labels added)."""
    return [Member(t, t.locality, with_topology(t.labels, t.locality), t.weight) for t in targets]


def load_assignment(name: str, targets: list[Target]) -> Any:
    """The ClusterLoadAssignment of cluster ``name``: one locality group per locality, all at
    priority 0."""
    return grouped_assignment(name, by_locality(members(targets)))


def grouped_assignment(name: str, groups: list[Group]) -> Any:
    """The ClusterLoadAssignment of cluster ``name`` with these locality groups (priorities
    and locality weights as given)."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for grouped in groups:
        # A locality's weight is its endpoints' (at most a uint32, as grpcio reads it), unless
        # a DestinationRule's distribute sets it.
        group = ec.LocalityLbEndpoints(
            locality=_locality(grouped.locality),
            load_balancing_weight=uint32(grouped.weight),
            priority=grouped.priority,
        )
        for member in grouped.members:
            target = member.item
            assert isinstance(target, Target)
            group.lb_endpoints.append(
                ec.LbEndpoint(
                    endpoint=ec.Endpoint(address=_address(target)),
                    health_status=(
                        health_check_pb2.HEALTHY if target.healthy else health_check_pb2.UNHEALTHY
                    ),
                    load_balancing_weight=uint32(target.weight),
                    metadata=_metadata(target),
                )
            )
        assignment.endpoints.append(group)
    return assignment


def own_localities(snapshot: Snapshot, view: NodeView) -> dict[str, int]:
    """The caller's own service as Envoy's zone aware routing sees it (its "local cluster"):
    the healthy endpoints per locality of the service its workload serves (the first by host
    when it serves several); empty when it serves none."""
    if not view.workload:
        return {}
    for host in sorted(snapshot.endpoints_by_service):
        endpoints = snapshot.endpoints_by_service[host]
        if any(e.workload == view.workload and e.namespace == view.namespace for e in endpoints):
            counts: dict[str, int] = {}
            for e in endpoints:
                if e.healthy:
                    counts[e.locality] = counts.get(e.locality, 0) + 1
            return counts
    return {}


def _healthy(member: Member) -> bool:
    target = member.item
    assert isinstance(target, Target)
    return target.healthy


def _groups(
    snapshot: Snapshot,
    view: NodeView,
    service: Service,
    chosen: list[Target],
    settings: TrafficSettings,
) -> list[Group]:
    """The locality groups of ``chosen`` for the caller of ``view`` under ``settings``."""
    balancer = settings.load_balancer
    if balancer.zone_aware is not None:
        return zone_aware_groups(
            members(chosen),
            view.locality,
            dict(view.labels),
            balancer.zone_aware,
            own_localities(snapshot, view),
            _healthy,
        )
    policy, forced = service_policy(
        balancer.locality, service.traffic_distribution, snapshot.model.settings.locality
    )
    return locality_groups(
        members(chosen),
        view.locality,
        dict(view.labels),
        policy,
        forced or settings.outlier_detection is not None,
    )


def load_assignments(snapshot: Snapshot, view: NodeView) -> dict[str, Any]:
    """The ClusterLoadAssignment of every cluster."""
    result: dict[str, Any] = {}
    for service in visible_services(snapshot, view):
        if not is_routable(service):
            continue
        policy = snapshot.model.destination_policy_for(service.host, view.namespace, view.labels)
        for port in service.ports:
            found = targets(snapshot, service, port)
            if view.mode == "proxyless":  # grpcio reads socket addresses only (gRFC A27)
                found = [t for t in found if not t.address.startswith(UNIX_PREFIX)]
            for subset in [None, *policy.subsets] if policy else [None]:
                settings = (
                    policy.settings_for(subset.name if subset else None, port.number)
                    if policy
                    else TrafficSettings()
                )
                name = cluster_name(service.host, port.number, subset.name if subset else None)
                chosen = subset_members(found, subset.labels) if subset else found
                groups = _groups(snapshot, view, service, chosen, settings)
                result[name] = grouped_assignment(name, groups)
    return result
