"""The dashboard's traffic figures from a Prometheus (``tulle controlplane --prometheus URL``),
as on Kubernetes, where Prometheus already scrapes every sidecar (the injector annotates pods
with ``prometheus.io/scrape``, ``/port`` and ``/path``). It asks for the same Istio-style series
the control plane reads itself in local mode (``tulle_requests_total``,
``tulle_request_duration_milliseconds_bucket``, the ``tulle_cluster_*`` figures) with PromQL's
``increase`` over the span asked for, over Prometheus' HTTP API (``/api/v1/query`` and
``/api/v1/query_range``), and answers with the same :class:`~tulle.control.telemetry.Delta`.

The caller's workload of a cluster figure is the series' ``workload`` label (the scrape
target's, as ``tulle up``'s targets file sets it), else its ``app`` or ``pod`` label."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from tulle.control.telemetry import Delta
from tulle.obs.scrape import (
    EJECTED,
    EJECTIONS,
    OVERFLOWS,
    UNKNOWN,
    ClusterFacts,
    Counts,
    EdgeKey,
    ReplicaKey,
    short_host,
)

EDGE = "reporter, source_workload, destination_service, destination_workload"
FAILED = 'response_code=~"5..|0"'
REPLICA = "sum by (source_workload, destination_service, destination_workload, replica, pod)"
OVER_MTLS = (
    '{reporter="destination", connection_security_policy="mutual_tls"}',
    '{reporter="source", destination_principal!="unknown"}',
)


class PrometheusError(RuntimeError):
    """Prometheus did not answer a query; the message says which and why."""


def _edge(labels: Mapping[str, str]) -> EdgeKey:
    return (
        labels.get("reporter", ""),
        labels.get("source_workload") or UNKNOWN,
        short_host(labels.get("destination_service", "")),
        labels.get("destination_workload") or UNKNOWN,
    )


def _caller(labels: Mapping[str, str]) -> str:
    return labels.get("workload") or labels.get("app") or labels.get("pod") or ""


class PrometheusTraffic:
    """Answers the dashboard's questions with PromQL."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout)

    @property
    def description(self) -> str:
        return f"Prometheus at {self.url}"

    async def stop(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return await self._get("/api/v1/query", params, promql)

    async def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """A range query's result matrix."""
        params = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:g}",
        }
        return await self._get("/api/v1/query_range", params, promql)

    async def _get(self, path: str, params: dict[str, str], promql: str) -> list[dict[str, Any]]:
        try:
            response = await self._client.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as error:
            raise PrometheusError(f"{self.url}: {error or type(error).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            reason = body.get("error") or response.text[:200]
            raise PrometheusError(f"{self.url}: query {promql!r}: {reason}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def delta(self, seconds: float) -> Delta:
        at = time.time()
        span = f"[{max(1, round(seconds))}s]"
        edges: dict[EdgeKey, Counts] = {}

        def counts(labels: Mapping[str, str]) -> Counts:
            return edges.setdefault(_edge(labels), Counts())

        for row in await self.query(f"sum by ({EDGE}) (increase(tulle_requests_total{span}))", at):
            counts(row["metric"]).requests = float(row["value"][1])
        failed = f"sum by ({EDGE}) (increase(tulle_requests_total{{{FAILED}}}{span}))"
        for row in await self.query(failed, at):
            counts(row["metric"]).failures = float(row["value"][1])
        mtls = " or ".join(
            f"sum by ({EDGE}) (increase(tulle_requests_total{selector}{span}))"
            for selector in OVER_MTLS
        )
        for row in await self.query(mtls, at):
            counts(row["metric"]).mtls = float(row["value"][1])
        buckets = (
            f"sum by ({EDGE}, le) (increase(tulle_request_duration_milliseconds_bucket{span}))"
        )
        for row in await self.query(buckets, at):
            labels = row["metric"]
            counts(labels).buckets[float(labels["le"])] = float(row["value"][1])
        clusters: dict[tuple[str, str], ClusterFacts] = {}
        for name in (EJECTED, EJECTIONS, OVERFLOWS):
            for row in await self.query(name, at):
                labels, value = row["metric"], float(row["value"][1])
                facts = clusters.setdefault(
                    (_caller(labels), labels["cluster_name"]), ClusterFacts()
                )
                if name == EJECTED and value > 0:
                    facts.ejected.add(labels["endpoint"])
                elif name == EJECTIONS:
                    facts.ejections += value
                elif name == OVERFLOWS:
                    facts.overflows += value
        replicas: dict[ReplicaKey, Counts] = {}
        served = f'{REPLICA} (increase(tulle_requests_total{{reporter="destination"{{}}}}{span}))'
        for selector, field in (("", "requests"), (f", {FAILED}", "failures")):
            for row in await self.query(served.replace("{}", selector), at):
                labels = row["metric"]
                replica = labels.get("replica") or labels.get("pod") or ""
                key = (*_edge(labels)[1:], replica)
                setattr(replicas.setdefault(key, Counts()), field, float(row["value"][1]))
        found = {key: c for key, c in edges.items() if c.requests > 0}
        served_now = {key: c for key, c in replicas.items() if c.requests > 0}
        return Delta(seconds, found, clusters, at, served_now)

    async def series(self, minutes: float, step: float) -> list[Delta]:
        end = time.time()
        start = end - minutes * 60 + step
        span = f"[{max(1, round(step))}s]"
        slices: dict[float, Delta] = {}
        for promql, field in (
            (f"sum by ({EDGE}) (increase(tulle_requests_total{span}))", "requests"),
            (f"sum by ({EDGE}) (increase(tulle_requests_total{{{FAILED}}}{span}))", "failures"),
        ):
            for row in await self.query_range(promql, start, end, step):
                key = _edge(row["metric"])
                for moment, value in row["values"]:
                    delta = slices.setdefault(moment, Delta(step, {}, {}, float(moment)))
                    setattr(delta.edges.setdefault(key, Counts()), field, float(value))
        return [slices[moment] for moment in sorted(slices)]
