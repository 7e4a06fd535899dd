"""Node identity: ``<mode>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["sidecar", "library", "proxyless"]
MODES: tuple[Mode, ...] = ("sidecar", "library", "proxyless")


class NodeIdError(ValueError):
    """A node id that does not follow the format."""


@dataclass(frozen=True)
class NodeInfo:
    """What a node id says: how the node takes part in the mesh, and where it runs."""

    id: str
    mode: Mode
    ip: str
    pod: str
    namespace: str
    domain: str = "svc.cluster.local"

    @property
    def workload(self) -> str:
        """The pod name without a replica suffix (``catalog-v1-0`` → ``catalog-v1``)."""
        head, _, tail = self.pod.rpartition("-")
        return head if head and tail.isdigit() else self.pod


def parse_node_id(node_id: str) -> NodeInfo:
    """Parse a node id; raises NodeIdError saying what is wrong."""
    parts = node_id.split("~")
    if len(parts) != 4:
        raise NodeIdError(
            f"node id {node_id!r} must have four '~'-separated parts: "
            "<mode>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local"
        )
    mode, ip, pod_namespace, domain = parts
    if mode not in MODES:
        raise NodeIdError(f"node id {node_id!r}: mode {mode!r} is not one of {', '.join(MODES)}")
    pod, _, namespace = pod_namespace.partition(".")
    if not pod or not namespace:
        raise NodeIdError(f"node id {node_id!r}: third part must be <pod>.<namespace>")
    suffix = domain.split(".", 1)[1] if "." in domain else "svc.cluster.local"
    return NodeInfo(node_id, mode, ip, pod, namespace, suffix)


def make_node_id(mode: Mode, ip: str, pod: str, namespace: str = "default") -> str:
    """The node id for a node of ``mode`` at ``ip`` running ``pod`` in ``namespace``."""
    return f"{mode}~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"
