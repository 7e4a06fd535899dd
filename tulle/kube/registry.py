"""The Kubernetes service registry: a watch per kind (Namespaces, Services, EndpointSlices, Pods,
Nodes), and after each burst of changes one update for the control plane: the mesh services
and the endpoint registrations of the whole cluster (``mapping``), and the workloads of the
pods in the mesh (``workloads``).

The first update waits until Services, EndpointSlices and Pods are listed once, so the control
plane never pushes a half-read cluster. Nodes only add the region of a locality: if they cannot
be read (no RBAC for them, say), endpoints carry no locality and nothing else waits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tulle.api.kubernetes import service_of
from tulle.api.model import Service, Workload
from tulle.kube.client import (
    ENDPOINT_SLICES,
    NAMESPACES,
    NODES,
    PODS,
    SERVICES,
    KubeClient,
    load_config,
)
from tulle.kube.mapping import (
    Cluster,
    endpoints_of,
    pod_localities,
    registrations,
    slice_inputs,
)
from tulle.kube.watch import Backoff, Source, WatchGroup
from tulle.kube.workloads import mesh_workloads

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.1
"""A burst of changes ends after this long without one (then one update)."""
LONGEST_SECONDS = 1.0
"""A stream of changes with no quiet gap still makes an update this often."""


@dataclass(frozen=True)
class RegistryUpdate:
    """The cluster as the mesh sees it: services, endpoint registrations, and the workloads
    of the pods in the mesh (with each such pod's workload name, by namespace and pod)."""

    services: tuple[Service, ...]
    registrations: tuple[dict[str, Any], ...]
    namespaces: frozenset[str]
    workloads: Mapping[tuple[str, str], Workload] = field(default_factory=dict)
    pods: Mapping[tuple[str, str], str] = field(default_factory=dict)
    localities: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """Each mesh pod's locality, by namespace and pod, when known."""


class KubeRegistry(WatchGroup):
    """Watches the cluster and calls ``on_update`` once per burst of changes."""

    def __init__(
        self,
        source: Source,
        on_update: Callable[[RegistryUpdate], None],
        backoff: Backoff | None = None,
        quiet: float = QUIET_SECONDS,
        longest: float = LONGEST_SECONDS,
    ) -> None:
        kinds = (NAMESPACES, SERVICES, ENDPOINT_SLICES, PODS, NODES)
        super().__init__(kinds, source, backoff, quiet, longest)
        self.on_update = on_update
        self.updates = 0
        self._mapped: dict[int, tuple[Any, tuple[Any, ...] | None, list[dict[str, Any]]]] = {}

    @classmethod
    def connect(
        cls,
        kubeconfig: Path | None,
        context: str | None,
        on_update: Callable[[RegistryUpdate], None],
    ) -> tuple[KubeRegistry, KubeClient]:
        """A registry reading the cluster of ``kubeconfig``/``context`` (in-cluster when neither);
        raises ``KubeConfigError`` naming what is missing."""
        client = KubeClient(load_config(kubeconfig, context))
        return cls(client, on_update), client

    @property
    def synced(self) -> bool:
        """Services, EndpointSlices and Pods have been listed once."""
        return all(self.watchers[k].synced.is_set() for k in ("Service", "EndpointSlice", "Pod"))

    def update(self) -> RegistryUpdate:
        """The current state, mapped."""
        services = self.watchers["Service"].objects
        cluster = Cluster(
            services=services,
            pods=self.watchers["Pod"].objects,
            nodes={name: node for (_, name), node in self.watchers["Node"].objects.items()},
        )
        mapped = [service_of(obj) for obj in services.values()]
        cache: dict[int, tuple[Any, tuple[Any, ...] | None, list[dict[str, Any]]]] = {}

        def of_slice(slice_: Mapping[str, Any]) -> list[dict[str, Any]]:
            # An unchanged slice (same inputs) keeps its registrations, the same objects, so
            # the control plane need not check them again (see tulle.control.kube_registry).
            inputs = slice_inputs(slice_, cluster)
            earlier = self._mapped.get(id(slice_))
            if inputs is not None and earlier and earlier[0] is slice_ and earlier[1] == inputs:
                found = earlier[2]
            else:
                found = endpoints_of(slice_, cluster)
            cache[id(slice_)] = (slice_, inputs, found)
            return found

        found = registrations(self.watchers["EndpointSlice"].objects.values(), cluster, of_slice)
        self._mapped = cache
        workloads = mesh_workloads(cluster.pods.values(), services.values())
        return RegistryUpdate(
            services=tuple(sorted((s for s in mapped if s is not None), key=lambda s: s.host)),
            registrations=tuple(found),
            namespaces=frozenset(name for _, name in self.watchers["Namespace"].objects),
            workloads=workloads.workloads,
            pods=workloads.pods,
            localities=pod_localities(
                (cluster.pods[key] for key in workloads.pods if key in cluster.pods),
                cluster.nodes,
            ),
        )

    def _flush(self) -> None:
        if not self.synced:
            return  # the update after the last of the first lists carries everything
        self.updates += 1
        self.on_update(self.update())
