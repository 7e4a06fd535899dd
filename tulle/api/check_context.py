"""What the cross-resource checks share: the loaded resources by kind, the host resolver, the
hosts the config (and the registry) defines and the subsets of each, and how an undefined host
is reported.

A host no Workload, Kubernetes Service or ServiceEntry defines is an ERROR when the files define
the mesh's workloads (at least one Workload: local mode, where nothing else can define it) or
when the caller says the known hosts are the whole mesh (``strict_hosts``: ``tulle validate
--strict-hosts``, the control plane with its registry); otherwise it is a WARNING: on Kubernetes
the host would be a Service the files do not carry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tulle.api.findings import Finding, Severity
from tulle.api.hosts import host_matches
from tulle.api.kinds import (
    DestinationRule,
    KubernetesService,
    Resource,
    ServiceEntry,
    Workload,
)
from tulle.api.loader import Loaded
from tulle.api.model import Service
from tulle.api.normalize import HostResolver, kubernetes_service, namespaces_of
from tulle.api.source import FieldPath

R = TypeVar("R", bound=Resource)

UNDEFINED = "is not defined by any Workload, Service or ServiceEntry"
ELSEWHERE = (
    "of these files: it must exist elsewhere (a Kubernetes Service, a ServiceEntry) for this "
    "config to apply"
)


class Context:
    """What the checks share: the resources by kind, the host resolver, the known hosts."""

    def __init__(
        self, loaded: list[Loaded], known_hosts: Iterable[str] = (), strict_hosts: bool = False
    ) -> None:
        self.loaded = loaded
        self.resolve = HostResolver(namespaces_of(item.resource for item in loaded))
        self.hosts: set[str] = set(known_hosts)
        for workload, _ in self.of(Workload):
            self.hosts.add(self.resolve(workload.spec.service or workload.name, workload.namespace))
        self.kubernetes: list[tuple[KubernetesService, Service | None, Loaded]] = [
            (service, kubernetes_service(service), item)
            for service, item in self.of(KubernetesService)
        ]
        self.hosts.update(mapped.host for _, mapped, _ in self.kubernetes if mapped is not None)
        for entry, _ in self.of(ServiceEntry):
            self.hosts.update(self.resolve(h, entry.namespace) for h in entry.spec.hosts)
        self.subsets: dict[str, set[str]] = {}
        for rule, _ in self.of(DestinationRule):
            host = self.resolve(rule.spec.host, rule.namespace)
            self.subsets.setdefault(host, set()).update(s.name for s in rule.spec.subsets)
        self.strict_hosts = strict_hosts or bool(self.of(Workload))
        """Whether an undefined host is an ERROR (local mode, or the hosts are the whole mesh)."""

    def of(self, kind: type[R]) -> list[tuple[R, Loaded]]:
        """The resources of ``kind`` with their load records, in load order."""
        return [(item.resource, item) for item in self.loaded if isinstance(item.resource, kind)]

    def is_known(self, host: str) -> bool:
        """Whether a Workload, a Kubernetes Service, a ServiceEntry (wildcards included) or the
        registry defines it."""
        return any(host_matches(known, host) for known in self.hosts)

    def undefined(self, item: Loaded, path: FieldPath, what: str) -> Finding:
        """The finding for ``what`` (``host NAME (FQDN)``) that no file defines: an ERROR in
        strict mode, else a WARNING that says it must be defined elsewhere."""
        if self.strict_hosts:
            return item.finding(Severity.ERROR, path, f"{what} {UNDEFINED}")
        return item.finding(Severity.WARNING, path, f"{what} {UNDEFINED} {ELSEWHERE}")


def located(item: Loaded) -> str:
    """``file:line`` of the resource of ``item``."""
    return f"{item.document.file}:{item.document.line}"
