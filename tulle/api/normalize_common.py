"""Normalization's shared vocabulary: host resolution by namespace, ``exportTo``, resource
references, label pairs and durations, used by every ``normalize_*`` module and by the checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tulle.api.durations import parse_duration
from tulle.api.hosts import fqdn
from tulle.api.kinds import Resource, Workload
from tulle.api.model import Pairs, ResourceRef


def pairs(mapping: Mapping[str, Any] | None, lower: bool = False) -> Pairs:
    """A mapping as sorted ``(key, value)`` pairs (keys lowercased when ``lower``)."""
    if not mapping:
        return ()
    return tuple(sorted(((k.lower() if lower else k), str(v)) for k, v in mapping.items()))


def ref(resource: Resource) -> ResourceRef:
    """The :class:`ResourceRef` of ``resource``."""
    return ResourceRef(resource.KIND, resource.namespace, resource.name)


def seconds(text: str | None) -> float | None:
    """A duration as seconds (None stays None)."""
    return None if text is None else parse_duration(text)


def export_namespaces(export_to: list[str], namespace: str) -> frozenset[str] | None:
    """The namespaces a resource's ``exportTo`` names (``.``: its own; ``~``: none); None when
    it is exported to all (``*``, or no ``exportTo``: Istio's default, as Tulle's Mesh has no
    default of its own). Istio's VirtualService, DestinationRule and ServiceEntry reference,
    ``exportTo``."""
    if not export_to or "*" in export_to:
        return None
    return frozenset(namespace if name == "." else name for name in export_to if name != "~")


class HostResolver:
    """Resolves host names as written in a resource of a given namespace."""

    def __init__(self, namespaces: Iterable[str]) -> None:
        self.namespaces = frozenset(namespaces)

    def __call__(self, host: str, namespace: str) -> str:
        return fqdn(host, namespace, self.namespaces)


def namespaces_of(resources: Iterable[Resource]) -> frozenset[str]:
    """Every namespace the resources live in."""
    return frozenset(resource.namespace for resource in resources)


def workload_labels(workload: Workload) -> dict[str, str]:
    """A workload's labels, with ``app: <service>`` added as Kubernetes deployments have it."""
    labels = {"app": workload.spec.service or workload.name}
    labels.update(workload.spec.labels)
    return labels
