"""``tulle top``: per-service requests/s, success rate and p50/p99 latency of a running local
mesh, read from the mesh's own metrics (every sidecar's ``/stats/prometheus`` and every library
app's ``/metrics``), as the callers saw them (``reporter="source"``: retries, faults and
ejections included)."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from tulle.local.state import MeshState

REQUESTS = "tulle_requests_total"
BUCKETS = "tulle_request_duration_milliseconds_bucket"


@dataclass
class ServiceCounts:
    """Cumulative counts for one destination service, summed over every caller."""

    requests: float = 0.0
    failures: float = 0.0  # 5xx answers and the mesh's own failures
    buckets: dict[float, float] = field(default_factory=lambda: collections.defaultdict(float))


@dataclass(frozen=True)
class ServiceRates:
    """What happened between two scrapes, for one service's workload (a version)."""

    service: str
    workload: str
    rps: float
    success: float | None  # None: no requests
    p50: float | None
    p99: float | None


def metric_urls(mesh: MeshState) -> list[str]:
    """Where each replica's mesh metrics are served."""
    urls = []
    for replica in mesh.replicas:
        if replica.stats_port:  # the sidecar's read-only listener (its admin one is loopback)
            urls.append(f"http://{replica.ip}:{replica.stats_port}/stats/prometheus")
        if replica.metrics_port:
            urls.append(f"http://{replica.ip}:{replica.metrics_port}/metrics")
    return urls


Key = tuple[str, str]  # (service, workload)


def scrape(client: httpx.Client, urls: Iterable[str]) -> dict[Key, ServiceCounts]:
    """The callers' counts per destination service and workload (a replica that does not
    answer is left out: it is restarting)."""
    services: dict[Key, ServiceCounts] = collections.defaultdict(ServiceCounts)
    for url in urls:
        try:
            text = client.get(url).text
        except httpx.HTTPError:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("reporter") != "source":
                    continue
                service = _short(labels.get("destination_service", ""))
                counts = services[(service, labels.get("destination_workload", ""))]
                if sample.name == REQUESTS:
                    counts.requests += sample.value
                    if labels.get("response_code", "").startswith("5"):
                        counts.failures += sample.value
                elif sample.name == BUCKETS:
                    counts.buckets[float(labels["le"])] += sample.value
    return dict(services)


def rates(
    before: dict[Key, ServiceCounts], after: dict[Key, ServiceCounts], seconds: float
) -> list[ServiceRates]:
    """Per service and workload, what happened between two scrapes ``seconds`` apart."""
    result = []
    for key in sorted(after):
        now, then = after[key], before.get(key, ServiceCounts())
        requests = max(0.0, now.requests - then.requests)
        failures = max(0.0, now.failures - then.failures)
        buckets = {le: now.buckets[le] - then.buckets.get(le, 0.0) for le in now.buckets}
        result.append(
            ServiceRates(
                *key,
                requests / seconds if seconds > 0 else 0.0,
                (requests - failures) / requests if requests else None,
                quantile(buckets, 0.5),
                quantile(buckets, 0.99),
            )
        )
    return result


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile from cumulative histogram buckets (upper bound → count), linear
    within a bucket, as Prometheus' histogram_quantile."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            share = (rank - below) / inside if inside else 0.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


def _short(host: str) -> str:
    suffix = ".svc.cluster.local"
    return host[: -len(suffix)].rsplit(".", 1)[0] if host.endswith(suffix) else host


def table(rows: list[ServiceRates]) -> Table:
    """The table ``tulle top`` shows: a row per service and workload (so a split between
    versions shows as rows of one service)."""
    view = Table(box=None, header_style="bold")
    for column in ("SERVICE", "WORKLOAD", "REQ/S", "SUCCESS", "P50 MS", "P99 MS"):
        view.add_column(column, justify="left" if column.isalpha() else "right")
    for row in rows:
        success = "-" if row.success is None else f"{row.success:.1%}"
        style = "" if row.success is None or row.success >= 0.99 else "red"
        view.add_row(row.service, row.workload, f"{row.rps:.1f}", success, _millis(row.p50),
                     _millis(row.p99), style=style)  # fmt: skip
    return view


def _millis(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


class Watcher:
    """Scrapes a mesh's metrics again and again; each call gives the rates since the last."""

    def __init__(self, mesh: MeshState) -> None:
        self.urls = metric_urls(mesh)
        self.client = httpx.Client(timeout=2.0)
        self.last = scrape(self.client, self.urls)
        self.at = time.monotonic()

    def next(self) -> list[ServiceRates]:
        counts = scrape(self.client, self.urls)
        now = time.monotonic()
        result = rates(self.last, counts, now - self.at)
        self.last, self.at = counts, now
        return result

    def close(self) -> None:
        self.client.close()
