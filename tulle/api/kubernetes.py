"""Kubernetes objects in config files, and a Kubernetes Service as a mesh service.

Real files mix kinds: Istio's ``bookinfo.yaml`` holds Services, ServiceAccounts and Deployments
beside mesh config. The loader reads them so:

- a kind of a Kubernetes built-in API group (:data:`BUILTIN_GROUPS`: the core group ``v1``,
  ``apps``, ``batch``, ``rbac.authorization.k8s.io``...) other than Service is not mesh config:
  it is skipped, with one INFO finding (:func:`is_builtin`);
- a ``v1`` Service is a host, ``<name>.<namespace>.svc.cluster.local``, with its TCP ports
  (:func:`service_of`). A port's protocol comes from ``appProtocol``, else from the port
  name's prefix before the first ``-`` (``http-web``, ``grpc``), as Istio's protocol selection
  does (:func:`port_protocol`); UDP and SCTP ports are not the mesh's.

The same functions map the Services tulle.kube watches in a cluster (tulle.kube.mapping uses
them), so a Service means the same in a file and in a cluster. Raw JSON in, model out: pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tulle.api.hosts import CLUSTER_DOMAIN
from tulle.api.model import ResourceRef, Service, ServicePort

BUILTIN_GROUPS = frozenset(
    {
        "",  # the core group: apiVersion v1 (Pod, Service, ConfigMap, Secret, Namespace...)
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "extensions",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)
"""The API groups a Kubernetes API server serves itself (not CRDs). ``gateway.networking.k8s.io``
is the Gateway API, a CRD group: not here."""

PROTOCOLS = {
    "http": "HTTP",
    "http2": "HTTP2",
    "h2c": "HTTP2",
    "kubernetes.io/h2c": "HTTP2",
    "grpc": "GRPC",
    "grpc-web": "GRPC",
    "tcp": "TCP",
    # Carried as opaque TCP: TLS passes through, and the mesh has no codec for these.
    "https": "TCP",
    "tls": "TCP",
    "mongo": "TCP",
    "redis": "TCP",
    "mysql": "TCP",
    "kubernetes.io/ws": "HTTP",
    "kubernetes.io/wss": "TCP",
}
"""``appProtocol`` values and port-name prefixes, and the mesh protocol each means."""

TRAFFIC_DISTRIBUTIONS = frozenset({"PreferClose", "PreferSameZone", "PreferSameNode"})
"""The ``trafficDistribution`` values read (Kubernetes 1.33+; PreferClose is PreferSameZone's
deprecated alias); another (implementation specific) value is not read."""

DEFAULT_PROTOCOL = "TCP"
"""A port neither ``appProtocol`` nor its name says anything about. Istio sniffs such a port's
protocol; Tulle carries it as TCP (name the port ``http-...`` or set ``appProtocol``)."""


def api_group(api_version: str) -> str:
    """``apps/v1`` → ``apps``; ``v1`` → ``""`` (the core group)."""
    return api_version.rpartition("/")[0]


def is_builtin(api_version: str) -> bool:
    """Whether ``apiVersion`` is of a Kubernetes built-in API group."""
    return api_group(api_version) in BUILTIN_GROUPS


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def port_protocol(port: Mapping[str, Any]) -> str | None:
    """The mesh protocol of a Service (or EndpointSlice) port: ``appProtocol`` first, then the
    name's prefix before the first ``-``; None for a UDP or SCTP port."""
    if str(port.get("protocol") or "TCP").upper() != "TCP":
        return None
    app = port.get("appProtocol")
    if isinstance(app, str) and app.lower() in PROTOCOLS:
        return PROTOCOLS[app.lower()]
    name = port.get("name")
    if isinstance(name, str) and name:
        prefix = name.lower().split("-", 1)[0]
        if prefix in PROTOCOLS:
            return PROTOCOLS[prefix]
    return DEFAULT_PROTOCOL


def service_host(name: str, namespace: str) -> str:
    """The host a Service is called by: ``name.namespace.svc.cluster.local``."""
    return f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"


def service_of(obj: Mapping[str, Any], origin: ResourceRef | None = None) -> Service | None:
    """The mesh service of a Kubernetes Service (raw JSON); None for an ExternalName Service
    (a DNS alias, not endpoints) or one without a name. ``origin`` names where it was read
    (a file's Service); a cluster's Service has none."""
    metadata, spec = _dict(obj.get("metadata")), _dict(obj.get("spec"))
    name, namespace = metadata.get("name"), metadata.get("namespace") or "default"
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    if spec.get("type") == "ExternalName":
        return None
    ports = []
    for raw_port in _list(spec.get("ports")):
        port = _dict(raw_port)
        number, protocol = port.get("port"), port_protocol(port)
        if not isinstance(number, int) or protocol is None:
            continue
        target = port.get("targetPort")
        ports.append(
            ServicePort(
                number=number,
                protocol=protocol,
                name=port.get("name") or None,
                target_port=target if isinstance(target, int) else None,
            )
        )
    cluster_ip = spec.get("clusterIP")
    addresses = (cluster_ip,) if isinstance(cluster_ip, str) and cluster_ip[:1].isdigit() else ()
    distribution = spec.get("trafficDistribution")
    return Service(
        host=service_host(name, namespace),
        namespace=namespace,
        ports=tuple(sorted(ports, key=lambda p: p.number)),
        location="MESH_INTERNAL",
        resolution="STATIC",
        origins=(origin,) if origin is not None else (),
        addresses=addresses,
        traffic_distribution=distribution if distribution in TRAFFIC_DISTRIBUTIONS else "",
    )
