"""Translation: pure functions from a snapshot and a node to that node's xDS resources.

Nodes with the same mode, namespace and workload get the same resources, so they are computed
once per snapshot and shared (a thousand proxyless clients cost one translation)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from tulle.control.snapshot import Snapshot
from tulle.control.translate.clusters import clusters
from tulle.control.translate.context import NodeView
from tulle.control.translate.endpoints import load_assignments
from tulle.control.translate.listeners import listeners
from tulle.control.translate.routes import route_configurations
from tulle.xds import types
from tulle.xds.node import NodeInfo

Resources = Mapping[str, Mapping[str, Any]]


def view_of(snapshot: Snapshot, node: NodeInfo) -> NodeView:
    """What of ``node`` matters to translation (its workload's labels come from the model)."""
    workload = snapshot.workload_of(node.namespace, node.pod, node.workload)
    labels = workload.labels if workload is not None else ()
    # Sidecars and the library get an inbound listener for their own workload, a proxyless
    # node with a Workload the server listeners of an xds=True grpcio server
    # (translate.grpc_server); proxyless clients without one share one translation.
    if workload is not None:
        own = workload.name
    else:
        own = node.workload if node.mode != "proxyless" else ""
    # Its locality: its pod's in the cluster (its node's, or its istio-locality label), else
    # its Workload's.
    locality = snapshot.pod_localities.get((node.namespace, node.pod)) or (
        workload.locality if workload is not None else ""
    )
    return NodeView(node.mode, node.namespace, labels, own, locality)


def translate(snapshot: Snapshot, view: NodeView) -> Resources:
    """Every resource of every type for a node."""
    return MappingProxyType(
        {
            types.LISTENER: MappingProxyType(listeners(snapshot, view)),
            types.ROUTE: MappingProxyType(route_configurations(snapshot, view)),
            types.CLUSTER: MappingProxyType(clusters(snapshot, view)),
            types.ENDPOINT: MappingProxyType(load_assignments(snapshot, view)),
        }
    )


class Translator:
    """Translation with a cache per snapshot and node view."""

    def __init__(self) -> None:
        self._version = -1
        self._cache: dict[NodeView, Resources] = {}

    def resources(self, snapshot: Snapshot, node: NodeInfo) -> Resources:
        """The resources of ``node`` under ``snapshot``."""
        if snapshot.version != self._version:
            self._cache.clear()
            self._version = snapshot.version
        view = view_of(snapshot, node)
        cached = self._cache.get(view)
        if cached is None:
            cached = self._cache[view] = translate(snapshot, view)
        return cached
