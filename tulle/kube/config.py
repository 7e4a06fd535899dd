"""Config from the API server: the Istio, Gateway API and ``tulle.dev`` custom resources of the
cluster as config documents, one update per burst of changes, and what the control plane
found about each written back as its ``.status`` and, when refused, an Event.

The documents are the same the files and the HTTP API give (``apiVersion``, ``kind``,
``metadata`` with name, namespace, labels and annotations, ``spec``): the control plane
validates them with the same code and findings. A change of ``.status`` alone (ours) changes
no document and makes no update."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube.generic_resource import create_namespaced_resource

from tulle.api.kinds import KINDS
from tulle.api.source import Document
from tulle.kube.client import Kind, KubeClient
from tulle.kube.install.crds import plural
from tulle.kube.watch import Backoff, Source, WatchGroup

log = logging.getLogger(__name__)

ConfigKey = tuple[str, str, str]
"""``(kind, namespace, name)``, as the control plane keys a resource."""

ORIGIN = "kubernetes"
"""The ``file`` of a document from the cluster: findings read ``kubernetes:KIND/NS/NAME``."""


def config_kinds() -> tuple[Kind, ...]:
    """Every config kind Tulle reads, at the first version it lists for the kind."""
    kinds = []
    for model in KINDS:
        version = model.VERSIONS[0]
        resource = create_namespaced_resource(model.GROUP, version, model.KIND, plural(model.KIND))
        kinds.append(Kind(model.KIND, resource, True))
    return tuple(kinds)


def document_of(obj: dict[str, Any]) -> tuple[ConfigKey, Document] | None:
    """The config document of a custom resource (status and server fields left out)."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    kind, name = obj.get("kind"), metadata.get("name")
    namespace = metadata.get("namespace") or "default"
    if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(namespace, str):
        return None
    kept: dict[str, Any] = {"name": name, "namespace": namespace}
    for field in ("labels", "annotations"):
        if isinstance(metadata.get(field), dict):
            kept[field] = {
                k: v
                for k, v in metadata[field].items()
                if k != "kubectl.kubernetes.io/last-applied-configuration"
            }
    data = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": kept}
    if "spec" in obj:
        data["spec"] = obj["spec"]
    document = Document(file=f"{ORIGIN}:{kind}/{namespace}/{name}", line=1, data=data)
    return (kind, namespace, name), document


@dataclass(frozen=True)
class Verdict:
    """What the control plane made of one resource: accepted or not, and why."""

    accepted: bool
    message: str


class ClusterConfig(WatchGroup):
    """Watches the config kinds; calls ``on_update`` with every document once per burst."""

    def __init__(
        self,
        source: Source,
        on_update: Callable[[dict[ConfigKey, Document]], None],
        backoff: Backoff | None = None,
        quiet: float = 0.1,
        longest: float = 1.0,
    ) -> None:
        super().__init__(config_kinds(), source, backoff, quiet, longest)
        self.on_update = on_update
        self.objects: dict[ConfigKey, dict[str, Any]] = {}
        self._last: dict[ConfigKey, Any] | None = None

    def documents(self) -> dict[ConfigKey, Document]:
        """Every config document in the cluster now (and its object in ``objects``)."""
        found: dict[ConfigKey, Document] = {}
        objects: dict[ConfigKey, dict[str, Any]] = {}
        for watcher in self.watchers.values():
            for obj in watcher.objects.values():
                mapped = document_of(obj)
                if mapped is not None:
                    found[mapped[0]] = mapped[1]
                    objects[mapped[0]] = obj
        self.objects = objects
        return found

    def _flush(self) -> None:
        documents = self.documents()
        contents = {key: document.data for key, document in documents.items()}
        if contents == self._last:
            return  # only .status (or nothing the config reads) changed
        self._last = contents
        self.on_update(documents)


class StatusWriter:
    """Writes each resource's verdict to its ``.status`` (condition ``Accepted``) when it
    changes, and an Event (type Warning, reason ``Rejected``) for each refusal."""

    def __init__(self, client: KubeClient, component: str = "tulle-controlplane") -> None:
        self.client = client
        self.component = component
        self._written: dict[ConfigKey, tuple[bool, str, Any, Any]] = {}
        self.kinds = {kind.name: kind for kind in config_kinds()}

    async def report(
        self, verdicts: dict[ConfigKey, Verdict], objects: dict[ConfigKey, dict[str, Any]]
    ) -> None:
        """Write what changed; a failure is logged, never raised (the config is in force)."""
        for gone in set(self._written) - set(verdicts):  # deleted: a new one starts afresh
            del self._written[gone]
        for key, verdict in verdicts.items():
            obj = objects.get(key)
            if obj is None:
                continue
            metadata = obj.get("metadata") or {}
            generation = metadata.get("generation")
            seen = (verdict.accepted, verdict.message, generation, metadata.get("uid"))
            if self._written.get(key) == seen:
                continue
            kind, namespace, name = key
            condition: dict[str, Any] = {
                "type": "Accepted",
                "status": "True" if verdict.accepted else "False",
                "reason": "Valid" if verdict.accepted else "Invalid",
                "message": verdict.message,
                "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            if isinstance(generation, int):
                condition["observedGeneration"] = generation
            try:
                await self.client.patch_status(
                    self.kinds[kind], namespace, name, {"conditions": [condition]}
                )
                if not verdict.accepted:
                    await self.client.create_event(
                        obj, "Warning", "Rejected", verdict.message, self.component
                    )
            except Exception as error:  # the API server is away, RBAC, a deleted object...
                log.warning("status of %s %s/%s not written: %s", kind, namespace, name, error)
                continue
            self._written[key] = seen
