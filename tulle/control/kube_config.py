"""Config from the cluster as the control plane sees it: documents in, verdicts out.

tulle.kube watches the custom resources and hands over their documents once per burst of
changes; the control plane judges them in its changes thread
(:meth:`~tulle.control.config.ConfigSources.set_cluster`), pushes when the config in force
changed, and this writes each resource's verdict back (``.status`` and, for a refusal, an
Event) through tulle.kube."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tulle.api.findings import Finding, Severity
from tulle.api.source import Document
from tulle.control.config import ClusterResult
from tulle.kube.client import KubeClient
from tulle.kube.config import ClusterConfig, ConfigKey, StatusWriter, Verdict


def _message(findings: tuple[Finding, ...], accepted: bool) -> str:
    shown = [f.format() for f in findings if f.severity is Severity.ERROR or accepted]
    if accepted:
        return "accepted" + (": " + "; ".join(shown) if shown else "")
    return "refused, the last good version stays in force: " + "; ".join(shown)


class KubernetesConfig:
    """The cluster's Istio, Gateway API and tulle.dev resources as a config source."""

    def __init__(self, client: KubeClient) -> None:
        self.watch = ClusterConfig(client, self._updated)
        self.writer = StatusWriter(client)
        self._pending: dict[ConfigKey, Document] | None = None
        self.on_update: Callable[[], None] | None = None

    def _updated(self, documents: dict[ConfigKey, Document]) -> None:
        self._pending = documents
        if self.on_update is not None:
            self.on_update()

    def take(self) -> dict[ConfigKey, Document] | None:
        """The latest documents, once."""
        documents, self._pending = self._pending, None
        return documents

    async def report(self, result: ClusterResult) -> None:
        """Write every resource's verdict where it changed (``.status``, Events)."""
        verdicts = {
            key: Verdict(True, _message(findings, True))
            for key, findings in result.accepted.items()
        }
        verdicts.update(
            (key, Verdict(False, _message(findings, False)))
            for key, findings in result.refused.items()
        )
        await self.writer.report(verdicts, self.watch.objects)

    def status(self) -> dict[str, Any]:
        """Per kind, what its watch did."""
        return self.watch.status()

    def start(self) -> None:
        """Start watching (on the running loop)."""
        self.watch.start()

    async def stop(self) -> None:
        """Stop watching."""
        await self.watch.stop()
