"""``tulle top``: per-service requests/s, success rate and p50/p99 latency of a running local
mesh, read from the mesh's own metrics (every sidecar's ``/stats/prometheus`` and every library
app's ``/metrics``), as the callers saw them (``reporter="source"``: retries, faults and
ejections included). Parsing and rates are :mod:`tulle.obs.scrape`'s (the control plane's
dashboard reads the same pages with it)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from rich.table import Table

from tulle.local.state import MeshState
from tulle.local.targets import metric_targets
from tulle.obs.scrape import Counts, Reading, by_destination, parse
from tulle.obs.scrape import rates as edge_rates


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
    return [url for _, url in metric_targets(mesh)]


Key = tuple[str, str]  # (service, workload)


def scrape(client: httpx.Client, urls: Iterable[str]) -> dict[Key, Counts]:
    """The callers' counts per destination service and workload (a replica that does not
    answer is left out: it is restarting)."""
    reading = Reading()
    for url in urls:
        try:
            text = client.get(url).text
        except httpx.HTTPError:
            continue
        parse(text, into=reading)
    return by_destination(reading.edges.items(), "source")


def rates(
    before: dict[Key, Counts], after: dict[Key, Counts], seconds: float
) -> list[ServiceRates]:
    """Per service and workload, what happened between two scrapes ``seconds`` apart."""
    result = []
    for key in sorted(after):
        got = edge_rates(before.get(key), after[key], seconds)
        result.append(ServiceRates(*key, got.rps, got.success, got.p50, got.p99))
    return result


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
