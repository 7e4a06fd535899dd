"""Kubernetes objects (raw JSON) to the registry's own types: pure functions, no I/O.

- A Service is a mesh service ``<name>.<namespace>.svc.cluster.local`` with its ports; a port's
  protocol comes from ``appProtocol``, else from the port name's prefix (``http-web``,
  ``grpc``...), as Istio's protocol selection does; UDP and SCTP ports are not the mesh's.
  That mapping is tulle.api.kubernetes's (:func:`service_of`, :func:`port_protocol`), which
  reads a Service written in a config file the same way.
- An EndpointSlice's endpoints are the service's endpoints, one per address and port, in the
  control plane's registration form (the one its HTTP API takes): healthy only when ready and
  not terminating, so a terminating or unready pod gets no new requests; the zone (with the
  region and subzone of the endpoint's Node) is the locality, unless the Pod's
  ``istio-locality`` label (``region.zone.subzone``, as Istio reads it) says otherwise.
- The Pod an endpoint points at gives its labels (for subsets), its service account (its
  identity) and whether it is in the mesh: a ``tulle-proxy`` sidecar or the annotation
  ``tulle.dev/mesh: library`` adds the label ``security.istio.io/tlsMode: istio``, which makes
  callers speak mTLS to it.

Nothing above tulle.kube sees a Kubernetes field name: the control plane reads the
:class:`~tulle.api.model.Service` values and the registration dicts built here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# service_of is re-exported: tests/kube/test_mapping.py reads it here.
from tulle.api.kubernetes import port_protocol, service_host, service_of  # noqa: F401

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TLS_MODE_LABEL = "security.istio.io/tlsMode"
MESH_ANNOTATION = "tulle.dev/mesh"
SIDECAR_CONTAINER = "tulle-proxy"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
LOCALITY_LABEL = "istio-locality"
TEMPLATE_HASH_LABEL = "pod-template-hash"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_map(value: Any) -> dict[str, str]:
    return {k: v for k, v in _dict(value).items() if isinstance(k, str) and isinstance(v, str)}


def in_mesh(pod: Mapping[str, Any]) -> bool:
    """Whether the pod runs a ``tulle-proxy`` sidecar (a container or a native sidecar init
    container) or is annotated ``tulle.dev/mesh: library``."""
    metadata, spec = _dict(pod.get("metadata")), _dict(pod.get("spec"))
    if _str_map(metadata.get("annotations")).get(MESH_ANNOTATION) == "library":
        return True
    containers = _list(spec.get("containers")) + _list(spec.get("initContainers"))
    return any(_dict(c).get("name") == SIDECAR_CONTAINER for c in containers)


def owner_names(pod: Mapping[str, Any]) -> list[str]:
    """The names a pod's workload may take, best first: the Deployment (a ReplicaSet owner
    whose name ends in the pod's ``pod-template-hash``), the controlling owner, the pod."""
    metadata = _dict(pod.get("metadata"))
    names: list[str] = []
    for raw in _list(metadata.get("ownerReferences")):
        owner = _dict(raw)
        name = owner.get("name")
        if not owner.get("controller") or not isinstance(name, str) or not name:
            continue
        template_hash = _str_map(metadata.get("labels")).get(TEMPLATE_HASH_LABEL)
        if owner.get("kind") == "ReplicaSet" and template_hash:
            head, _, tail = name.rpartition("-")
            if head and tail == template_hash:
                names.append(head)
        names.append(name)
        break
    pod_name = metadata.get("name")
    if isinstance(pod_name, str) and pod_name:
        names.append(pod_name)
    return names


def locality(zone: str | None, node: Mapping[str, Any] | None) -> str:
    """``region/zone/subzone`` from the endpoint's zone and its Node's topology labels; "" when
    the region is not known (a locality must start with its region)."""
    labels = _str_map(_dict(_dict(node).get("metadata")).get("labels"))
    region = labels.get(REGION_LABEL, "")
    zone = zone or labels.get(ZONE_LABEL, "")
    subzone = labels.get(SUBZONE_LABEL, "")
    if not region:
        return ""
    parts = [region] + ([zone] if zone else []) + ([subzone] if zone and subzone else [])
    return "/".join(parts)


def pod_locality(pod: Mapping[str, Any], zone: str | None, node: Mapping[str, Any] | None) -> str:
    """A pod's locality: its ``istio-locality`` label (``.`` separates the parts, as label
    values cannot hold ``/``; Istio's ``GetLocalityLabel``), else its Node's (:func:`locality`,
    ``zone`` first: an EndpointSlice's)."""
    label = _str_map(_dict(pod.get("metadata")).get("labels")).get(LOCALITY_LABEL, "")
    if label:
        return label if "/" in label else label.replace(".", "/")
    return locality(zone, node)


def pod_localities(
    pods: Iterable[Mapping[str, Any]], nodes: Mapping[str, Mapping[str, Any]]
) -> dict[tuple[str, str], str]:
    """The known localities of ``pods`` by namespace and name (their proxies' callers' side)."""
    found: dict[tuple[str, str], str] = {}
    for pod in pods:
        metadata, spec = _dict(pod.get("metadata")), _dict(pod.get("spec"))
        name, node_name = metadata.get("name"), spec.get("nodeName")
        node = nodes.get(node_name) if isinstance(node_name, str) else None
        where = pod_locality(pod, None, node)
        if isinstance(name, str) and where:
            found[(metadata.get("namespace") or "default", name)] = where
    return found


@dataclass(frozen=True)
class Cluster:
    """What the endpoint mapping reads besides the slices: Services, Pods and Nodes by key."""

    services: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    pods: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    nodes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _healthy(conditions: Mapping[str, Any]) -> bool:
    # ready: unset means unknown, which consumers are told to read as ready; terminating:
    # unset means false. A terminating endpoint may still be serving: it finishes what it has,
    # and gets nothing new.
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def endpoints_of(slice_: Mapping[str, Any], cluster: Cluster) -> list[dict[str, Any]]:
    """The registrations (the control plane's HTTP API form) of an EndpointSlice's endpoints:
    one per address and port of a Service port; none for an FQDN slice, a slice of an unknown
    Service, or a port the Service does not have."""
    metadata = _dict(slice_.get("metadata"))
    namespace = metadata.get("namespace") or "default"
    service_name = _str_map(metadata.get("labels")).get(SERVICE_NAME_LABEL)
    if slice_.get("addressType") not in ("IPv4", "IPv6") or not service_name:
        return []
    service = cluster.services.get((namespace, service_name))
    if service is None:
        return []
    service_spec = _dict(service.get("spec"))
    service_ports = {
        (_dict(p).get("name") or ""): _dict(p) for p in _list(service_spec.get("ports"))
    }
    ports: list[tuple[int, int, str]] = []  # (endpoint port, service port, protocol)
    for raw_port in _list(slice_.get("ports")):
        port = _dict(raw_port)
        number, name = port.get("port"), port.get("name") or ""
        service_port = service_ports.get(name)
        if not isinstance(number, int) or service_port is None:
            continue
        protocol = port_protocol({**service_port, **{k: v for k, v in port.items() if v}})
        if protocol is not None and isinstance(service_port.get("port"), int):
            ports.append((number, service_port["port"], protocol))
    found: list[dict[str, Any]] = []
    host = service_host(service_name, namespace)
    for raw_endpoint in _list(slice_.get("endpoints")):
        endpoint = _dict(raw_endpoint)
        target = _dict(endpoint.get("targetRef"))
        pod: Mapping[str, Any] = {}
        if target.get("kind") == "Pod" and isinstance(target.get("name"), str):
            pod = cluster.pods.get((target.get("namespace") or namespace, target["name"]), {})
        pod_meta, pod_spec = _dict(pod.get("metadata")), _dict(pod.get("spec"))
        labels = _str_map(pod_meta.get("labels"))
        if pod and in_mesh(pod):
            labels[TLS_MODE_LABEL] = "istio"
        node_name = endpoint.get("nodeName") or pod_spec.get("nodeName")
        node = cluster.nodes.get(node_name) if isinstance(node_name, str) else None
        zone = endpoint.get("zone") if isinstance(endpoint.get("zone"), str) else None
        healthy = _healthy(_dict(endpoint.get("conditions")))
        account = pod_spec.get("serviceAccountName") or "default"
        workload = owner_names(pod)[0] if pod else ""
        for address in _list(endpoint.get("addresses"))[:1]:  # more than one: the same pod
            for number, service_port_number, protocol in ports:
                found.append(
                    {
                        "service": host,
                        "namespace": pod_meta.get("namespace") or namespace,
                        "address": address,
                        "port": number,
                        "servicePort": service_port_number,
                        "protocol": protocol,
                        "labels": labels,
                        "serviceAccount": account,
                        "locality": pod_locality(pod, zone, node),
                        "healthy": healthy,
                        "workload": workload,
                    }
                )
    return found


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return _dict(_dict(obj).get("metadata")).get("resourceVersion") if obj else None


def slice_inputs(slice_: Mapping[str, Any], cluster: Cluster) -> tuple[Any, ...] | None:
    """The resourceVersions of everything :func:`endpoints_of` reads for ``slice_`` (the slice,
    its Service, its endpoints' Pods and Nodes): equal inputs, equal endpoints. None when an
    object has no resourceVersion (then nothing can be reused)."""
    metadata = _dict(slice_.get("metadata"))
    namespace = metadata.get("namespace") or "default"
    service_name = _str_map(metadata.get("labels")).get(SERVICE_NAME_LABEL)
    versions: list[Any] = [_version(slice_)]
    versions.append(_version(cluster.services.get((namespace, service_name or ""))))
    for raw_endpoint in _list(slice_.get("endpoints")):
        endpoint = _dict(raw_endpoint)
        target = _dict(endpoint.get("targetRef"))
        if target.get("kind") == "Pod" and isinstance(target.get("name"), str):
            pod = cluster.pods.get((target.get("namespace") or namespace, target["name"]))
            versions.append(_version(pod) if pod else "-")
            node_name = endpoint.get("nodeName") or _dict(_dict(pod).get("spec")).get("nodeName")
        else:
            node_name = endpoint.get("nodeName")
        node = cluster.nodes.get(node_name) if isinstance(node_name, str) else None
        versions.append(_version(node) if node else "-")
    if versions[0] is None:
        return None
    return tuple(versions)


def registrations(
    slices: Iterable[Mapping[str, Any]],
    cluster: Cluster,
    mapped: Callable[[Mapping[str, Any]], list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Every endpoint registration of ``slices``; an address and port that two slices of one
    service both list (as during a slice's hand-over) counts once, healthy if either says so.
    ``mapped`` maps one slice (by default :func:`endpoints_of`; a cache may stand in)."""
    merged: dict[tuple[str, str, int], dict[str, Any]] = {}
    for slice_ in slices:
        found = mapped(slice_) if mapped is not None else endpoints_of(slice_, cluster)
        for registration in found:
            key = (registration["service"], registration["address"], registration["port"])
            earlier = merged.get(key)
            if earlier is None or (registration["healthy"] and not earlier["healthy"]):
                merged[key] = registration
    return list(merged.values())
