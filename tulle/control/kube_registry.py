"""The Kubernetes registry as the control plane sees it: services and endpoints, with no
Kubernetes field name in sight (tulle.kube maps the objects).

``tulle controlplane --registry kubernetes`` adds it beside the local registry (endpoints
registered over the HTTP API still count): its services define hosts the config may route to,
and its endpoints are those services' endpoints. Each update from tulle.kube (one per burst of
cluster changes) is checked as a registration over the API is (an endpoint that fails is left
out and logged once), then published in one swap."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tulle.api.model import Service, Workload
from tulle.control.registry import Endpoint, RegistrationError, endpoint_from_dict
from tulle.kube.client import KubeClient
from tulle.kube.registry import KubeRegistry, RegistryUpdate

log = logging.getLogger(__name__)


class KubernetesRegistry:
    """Services and endpoints read from the API server (a :class:`ServiceRegistry`)."""

    def __init__(self, kubeconfig: Path | None, context: str | None) -> None:
        self.watch: KubeRegistry
        self.client: KubeClient
        self.watch, self.client = KubeRegistry.connect(kubeconfig, context, self._updated)
        self._endpoints: tuple[Endpoint, ...] = ()
        self._services: tuple[Service, ...] = ()
        self._namespaces: frozenset[str] = frozenset()
        self._workloads: Mapping[tuple[str, str], Workload] = {}
        self._pods: Mapping[tuple[str, str], str] = {}
        self._localities: Mapping[tuple[str, str], str] = {}
        self._pending: RegistryUpdate | None = None
        self._refused: set[str] = set()
        self._checked: dict[int, tuple[dict[str, Any], Endpoint]] = {}
        self.on_update: Any = None  # set by the control plane: called on the loop per update

    def _updated(self, update: RegistryUpdate) -> None:
        self._pending = update
        if self.on_update is not None:
            self.on_update()

    def take(self) -> bool:
        """Publish the latest update (run in the control plane's changes thread); True when
        there was one."""
        update, self._pending = self._pending, None
        if update is None:
            return False
        endpoints = []
        checked: dict[int, tuple[dict[str, Any], Endpoint]] = {}
        for registration in update.registrations:
            # tulle.kube hands an unchanged slice's registrations over as the same objects:
            # those were checked already.
            earlier = self._checked.get(id(registration))
            if earlier is not None and earlier[0] is registration:
                endpoints.append(earlier[1])
                checked[id(registration)] = earlier
                continue
            try:
                endpoint = endpoint_from_dict(registration)
                endpoints.append(endpoint)
                checked[id(registration)] = (registration, endpoint)
            except RegistrationError as error:
                reason = f"{registration.get('service')} {registration.get('address')}: {error}"
                if reason not in self._refused:
                    self._refused.add(reason)
                    log.warning("Kubernetes endpoint left out: %s", reason)
        self._checked = checked
        self._endpoints, self._services = tuple(endpoints), update.services
        self._namespaces = update.namespaces
        self._workloads, self._pods = update.workloads, update.pods
        self._localities = update.localities
        return True

    def namespaces(self) -> frozenset[str]:
        """The cluster's namespaces."""
        return self._namespaces

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every endpoint of the cluster's services."""
        return self._endpoints

    def services(self) -> tuple[Service, ...]:
        """The cluster's services (hosts and ports)."""
        return self._services

    def workloads(self) -> Mapping[tuple[str, str], Workload]:
        """The workloads of the cluster's pods in the mesh, by namespace and name."""
        return self._workloads

    def pods(self) -> Mapping[tuple[str, str], str]:
        """Each mesh pod's workload name, by namespace and pod name."""
        return self._pods

    def localities(self) -> Mapping[tuple[str, str], str]:
        """Each mesh pod's locality (region/zone/subzone), by namespace and pod name."""
        return self._localities

    def hosts(self) -> set[str]:
        """The hosts the cluster's services define."""
        return {service.host for service in self._services}

    def status(self) -> dict[str, Any]:
        """The API server, and per kind: objects, resourceVersion, lists, resumes, errors..."""
        return {"server": self.client.server, "kinds": self.watch.status()}

    def start(self) -> None:
        """Start watching (on the running loop)."""
        self.watch.start()

    async def stop(self) -> None:
        """Stop watching and close the connections."""
        await self.watch.stop()
        await self.client.close()
