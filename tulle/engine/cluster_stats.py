"""The engine's per-cluster state as metrics, read at scrape time (nothing on the request path):
the endpoints outlier detection has ejected now, ejections so far, and circuit-breaker overflows,
named after Envoy's cluster statistics (``envoy_cluster_outlier_detection_ejections_active``,
``..._ejections_enforced_total``, ``upstream_rq_pending_overflow``) with the ``tulle_`` prefix.
Envoy keeps per-endpoint state in its admin ``/clusters`` page only; the dashboard reads metrics,
so the ejected endpoints are a gauge here too (one series per endpoint ejected now)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tulle.engine.outbound import Engine


class ClusterCollector(Collector):
    """Reads every engine's clusters (the library has one engine per event loop) when scraped.
    The scrape may run on another thread than the engines: it only reads (copies of) their
    dictionaries and numbers, never the detector's methods that change state."""

    def __init__(self, engines: Callable[[], Iterable[Engine]]) -> None:
        self.engines = engines

    def collect(self) -> Iterator[Metric]:
        ejected = GaugeMetricFamily(
            "tulle_cluster_endpoint_ejected",
            "1 for each endpoint outlier detection has ejected now.",
            labels=("cluster_name", "endpoint"),
        )
        active = GaugeMetricFamily(
            "tulle_cluster_outlier_detection_ejections_active",
            "Endpoints ejected now.",
            labels=("cluster_name",),
        )
        enforced = CounterMetricFamily(
            "tulle_cluster_outlier_detection_ejections_enforced",
            "Ejections so far.",
            labels=("cluster_name",),
        )
        overflows = CounterMetricFamily(
            "tulle_cluster_circuit_breaker_overflow",
            "Requests, connections and retries refused by the cluster's circuit breaker.",
            labels=("cluster_name",),
        )
        totals: dict[str, list[float]] = {}
        gone: set[tuple[str, str]] = set()
        for engine in list(self.engines()):
            now = engine.clock()
            for name, state in list(engine.clusters.items()):
                figures = totals.setdefault(name, [0.0, 0.0, 0.0])
                out = [
                    key
                    for key, health in list(state.outlier.hosts.items())
                    if health.ejected_until is not None and now < health.ejected_until
                ]
                figures[0] += len(out)
                figures[1] += state.ejections
                figures[2] += state.overflows
                gone.update((name, key) for key in out)
        for name, (count, ejections, refused) in sorted(totals.items()):
            active.add_metric((name,), count)
            enforced.add_metric((name,), ejections)
            overflows.add_metric((name,), refused)
        for name, key in sorted(gone):
            ejected.add_metric((name, key), 1)
        yield from (ejected, active, enforced, overflows)
