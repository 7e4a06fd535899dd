"""Pods in the mesh as the control plane's workloads: pure functions, no I/O.

A sidecar or library pod gets the inbound side its Services give it (a listener per target
port, PeerAuthentication and AuthorizationPolicy by its labels), as a ``Workload`` of the config
does in local mode. The pod's proxy names only its pod (its node id is ``<pod>.<namespace>``),
so the mapping also says which workload each pod is.

Replicas share a workload (and so one translation for all their proxies) when they agree on
everything translation reads: labels, service account, mode and ports. Its name is the pod's
owner as Istio names it (a Deployment for a ReplicaSet's pod, else the owning StatefulSet,
DaemonSet or Job), which is what metrics call the workload; replicas that differ (two
ReplicaSets of one Deployment during a rollout: their ``pod-template-hash`` labels differ) fall
back to the owner's own name, then to the pod's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tulle.api.kubernetes import port_protocol, service_host
from tulle.api.model import ResourceRef, Workload, WorkloadPort
from tulle.kube.mapping import MESH_ANNOTATION, _dict, _list, _str_map, in_mesh, owner_names


@dataclass(frozen=True)
class MeshWorkloads:
    """The cluster's mesh workloads by ``(namespace, name)``, and each mesh pod's workload
    name by ``(namespace, pod)``."""

    workloads: Mapping[tuple[str, str], Workload]
    pods: Mapping[tuple[str, str], str]


def _selects(service: Mapping[str, Any], namespace: str, labels: Mapping[str, str]) -> bool:
    metadata, spec = _dict(service.get("metadata")), _dict(service.get("spec"))
    selector = _str_map(spec.get("selector"))
    if not selector or (metadata.get("namespace") or "default") != namespace:
        return False
    return all(labels.get(key) == value for key, value in selector.items())


def _container_ports(spec: Mapping[str, Any]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for container in _list(spec.get("containers")):
        for raw in _list(_dict(container).get("ports")):
            port = _dict(raw)
            name, number = port.get("name"), port.get("containerPort")
            if isinstance(name, str) and isinstance(number, int):
                ports.setdefault(name, number)
    return ports


def pod_ports(
    pod: Mapping[str, Any], services: Iterable[Mapping[str, Any]]
) -> tuple[tuple[WorkloadPort, ...], str]:
    """The ports a pod serves to the mesh (each selecting Service's target ports, a named
    target port looked up in the pod's containers) and the host of the first such Service
    ("" when none selects it). A pod no Service selects serves its containers' named TCP
    ports, with the protocol their names say."""
    metadata, spec = _dict(pod.get("metadata")), _dict(pod.get("spec"))
    namespace = metadata.get("namespace") or "default"
    labels = _str_map(metadata.get("labels"))
    named = _container_ports(spec)
    ports: dict[int, WorkloadPort] = {}
    hosts: list[str] = []
    for service in services:
        if not _selects(service, namespace, labels):
            continue
        hosts.append(service_host(_dict(service.get("metadata")).get("name") or "", namespace))
        for raw in _list(_dict(service.get("spec")).get("ports")):
            port = _dict(raw)
            protocol, target = port_protocol(port), port.get("targetPort", port.get("port"))
            number = named.get(target) if isinstance(target, str) else target
            if protocol is None or not isinstance(number, int):
                continue
            ports.setdefault(number, WorkloadPort(port.get("name") or "", number, protocol))
    if not hosts:
        for name, number in named.items():
            protocol = port_protocol({"name": name})
            if protocol is not None:
                ports.setdefault(number, WorkloadPort(name, number, protocol))
    ordered = tuple(sorted(ports.values(), key=lambda p: p.port))
    return ordered, (sorted(hosts)[0] if hosts else "")


def mesh_workloads(
    pods: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]]
) -> MeshWorkloads:
    """The workloads of the pods in the mesh (see the module's docstring for names)."""
    # Services by namespace and by one of their selector's labels: a pod is checked against
    # the Services that select one of its labels only (a thousand Services, ten thousand pods).
    by_label: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for service in services:
        namespace = _dict(service.get("metadata")).get("namespace") or "default"
        selector = _str_map(_dict(service.get("spec")).get("selector"))
        if selector:
            key, value = min(selector.items())
            by_label.setdefault((namespace, key, value), []).append(service)
    workloads: dict[tuple[str, str], Workload] = {}
    names: dict[tuple[str, str], str] = {}
    for pod in sorted(pods, key=lambda p: str(_dict(p.get("metadata")).get("name"))):
        if not in_mesh(pod) or not isinstance(_dict(pod.get("metadata")).get("name"), str):
            continue
        metadata, spec = _dict(pod.get("metadata")), _dict(pod.get("spec"))
        namespace = metadata.get("namespace") or "default"
        labels = _str_map(metadata.get("labels"))
        candidates = [
            service
            for key, value in sorted(labels.items())
            for service in by_label.get((namespace, key, value), ())
        ]
        ports, host = pod_ports(pod, candidates)
        library = _str_map(metadata.get("annotations")).get(MESH_ANNOTATION) == "library"
        shape = Workload(
            name="",
            namespace=namespace,
            service_host=host,
            command=(),
            args=(),
            env=(),
            replicas=1,
            ports=ports,
            service_account=spec.get("serviceAccountName") or "default",
            labels=tuple(sorted(_str_map(metadata.get("labels")).items())),
            mesh="library" if library else "sidecar",
            readiness=None,
            origin=ResourceRef("Pod", namespace, metadata["name"]),
        )
        for name in owner_names(pod):
            earlier = workloads.get((namespace, name))
            if earlier is None:
                workloads[(namespace, name)] = _named(shape, name)
            elif _same(earlier, shape):
                workloads[(namespace, name)] = _named(earlier, name, earlier.replicas + 1)
            else:
                continue
            names[(namespace, metadata["name"])] = name
            break
    return MeshWorkloads(workloads, names)


def _named(shape: Workload, name: str, replicas: int = 1) -> Workload:
    return replace(shape, name=name, replicas=replicas)


def _same(one: Workload, other: Workload) -> bool:
    """Whether two pods' workloads translate alike."""
    return (one.labels, one.ports, one.service_account, one.mesh, one.service_host) == (
        other.labels,
        other.ports,
        other.service_account,
        other.mesh,
        other.service_host,
    )
