"""Which control-plane replica leads: with ``--registry kubernetes``, the one holding the Lease
(tulle.kube.leader); alone (local mode), this one. What only the leader does asks
:attr:`Leadership.leading` or listens with :meth:`Leadership.listen`.

The metric ``tulle_controlplane_leader{identity}`` is 1 on the leader and 0 on the others,
present once the replica has read the Lease (``tulle check`` and alerts: exactly one 1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from tulle.kube.leader import LeaderElector


class _LeaderGauge(Collector):
    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "tulle_controlplane_leader",
            "1 while this control-plane replica leads (holds the Lease), else 0.",
            labels=("identity",),
        )
        elector = self.leadership.elector
        if elector is not None and elector.rounds:
            gauge.add_metric((elector.identity,), 1.0 if elector.leading else 0.0)
        yield gauge


class Leadership:
    """This replica's part in the election (none in local mode: it leads)."""

    def __init__(self, metrics: CollectorRegistry) -> None:
        self.elector: LeaderElector | None = None
        self._listeners: list[Callable[[bool], None]] = []
        metrics.register(_LeaderGauge(self))

    @property
    def leading(self) -> bool:
        """Whether this replica does the leader's work now."""
        return self.elector is None or self.elector.leading

    def listen(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(leading)`` (on the loop) whenever leadership changes."""
        self._listeners.append(callback)

    def start(self, kubeconfig: Path | None, context: str | None, namespace: str) -> None:
        """Take part in the election of ``namespace``'s Lease (on the running loop)."""
        from tulle.kube.leader import LeaderElector  # noqa: PLC0415 (lightkube: kubernetes only)

        self.elector = LeaderElector.connect(kubeconfig, context, namespace, self._changed)
        self.elector.start()

    def _changed(self, leading: bool) -> None:
        for callback in list(self._listeners):
            callback(leading)

    def status(self) -> dict[str, Any]:
        """Who this replica is, whether it leads, and who holds the Lease."""
        if self.elector is None:
            return {"election": "none (one replica)", "leading": True}
        elector = self.elector
        return {
            "identity": elector.identity,
            "leading": elector.leading,
            "holder": elector.holder,
            "lease": str(elector),
            "error": elector.last_error,
        }

    async def stop(self) -> None:
        """Leave the election (a leader gives the Lease up)."""
        if self.elector is not None:
            await self.elector.stop()
