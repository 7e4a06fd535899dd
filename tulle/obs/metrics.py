"""Request metrics, the same for sidecar and library: named and labelled as Istio's standard
metrics with a ``tulle_`` prefix, through prometheus-client. Both ends of a call record it:
the caller with ``reporter="source"``, the callee with ``reporter="destination"``."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tulle.obs.views import RequestView, ResponseView

SOURCE_WORKLOAD_HEADER = "x-tulle-source-workload"
"""Sent with every routed request: the caller's workload, for the callee's inbound metrics."""

LABELS = (
    "reporter",
    "source_workload",
    "destination_service",
    "destination_workload",
    "response_code",
    "response_flags",
)
TCP_LABELS = ("source_workload", "destination_service")
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_BOUNDS = (*(f"{b:g}" for b in BUCKETS), "+Inf")  # the buckets' ``le`` labels
BATCH = 64  # requests kept before they are counted (small: a batch's objects are RSS)
# reporter, source workload, destination service and workload, status, flags
_Key = tuple[str, str, str, str, int, str]


class _Series:
    """One label set's request figures, kept as plain numbers (the exposition reads them)."""

    __slots__ = ("buckets", "duration_sum", "labels", "request_bytes", "requests", "response_bytes")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.requests = 0
        self.duration_sum = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.request_bytes = 0
        self.response_bytes = 0


class _RequestCollector(Collector):
    """Exposes the request series as prometheus-client metric families at scrape time (after
    ``fold`` has added the requests not yet counted)."""

    def __init__(
        self, series: dict[Any, _Series], lock: threading.Lock, fold: Callable[[], None]
    ) -> None:
        self.series = series
        self.lock = lock
        self.fold = fold

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("tulle_requests", "Requests handled.", labels=LABELS)
        duration = HistogramMetricFamily(
            "tulle_request_duration_milliseconds", "Request duration.", labels=LABELS
        )
        sent = CounterMetricFamily("tulle_request_bytes", "Request body bytes.", labels=LABELS)
        received = CounterMetricFamily(
            "tulle_response_bytes", "Response body bytes.", labels=LABELS
        )
        self.fold()
        with self.lock:
            rows = [
                (s.labels, s.requests, s.duration_sum, list(s.buckets), s.request_bytes,
                 s.response_bytes)
                for s in self.series.values()
            ]  # fmt: skip
        for labels, count, total, buckets, request_bytes, response_bytes in rows:
            requests.add_metric(labels, count)
            cumulative = itertools.accumulate(buckets)
            duration.add_metric(labels, list(zip(_BOUNDS, cumulative, strict=True)), total)
            sent.add_metric(labels, request_bytes)
            received.add_metric(labels, response_bytes)
        yield from (requests, duration, sent, received)


class MeshMetrics:
    """Request count, duration, and bytes, per source, destination, code and flags. A request
    is kept as a tuple and counted later, with the others since, in plain numbers per label set
    (one lock, no per-series objects on the hot path; counting a batch in one go costs less
    than counting each request among the rest of its work), and exposed through a
    prometheus-client collector; TCP figures are prometheus-client counters."""

    def __init__(self, source_workload: str) -> None:
        self.source = source_workload
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._series: dict[_Key, _Series] = {}
        self._pending: list[tuple[_Key, float, int, int]] = []  # key, ms, bytes in, bytes out
        self.registry.register(_RequestCollector(self._series, self._lock, self.fold))
        self.tcp_opened = Counter(
            "tulle_tcp_connections_opened", "TCP connections proxied.", TCP_LABELS,
            registry=self.registry,
        )  # fmt: skip
        self.tcp_closed = Counter(
            "tulle_tcp_connections_closed", "TCP connections ended.", TCP_LABELS,
            registry=self.registry,
        )  # fmt: skip
        self.tcp_sent = Counter(
            "tulle_tcp_sent_bytes", "Bytes sent upstream over TCP.", TCP_LABELS,
            registry=self.registry,
        )  # fmt: skip
        self.tcp_received = Counter(
            "tulle_tcp_received_bytes", "Bytes received from upstream over TCP.", TCP_LABELS,
            registry=self.registry,
        )  # fmt: skip

    def tcp_open(self, service: str) -> None:
        """A TCP connection started."""
        self.tcp_opened.labels(self.source, service).inc()

    def tcp_close(self, service: str, sent: int, received: int) -> None:
        """A TCP connection ended, with its byte counts."""
        self.tcp_closed.labels(self.source, service).inc()
        self.tcp_sent.labels(self.source, service).inc(sent)
        self.tcp_received.labels(self.source, service).inc(received)

    def _observe(self, key: _Key, received: int, millis: float, sent: int) -> None:
        with self._lock:
            self._pending.append((key, millis, received, sent))
            full = len(self._pending) >= BATCH
        if full:
            self.fold()

    def fold(self) -> None:
        """Add the requests recorded since the last fold to their series (done every
        ``BATCH`` requests and before every scrape)."""
        with self._lock:
            pending, self._pending = self._pending, []
            for key, millis, received, sent in pending:
                series = self._series.get(key)
                if series is None:
                    reporter, source, service, workload, status, flag = key
                    labels = (reporter, source, service, workload or "unknown", str(status), flag)
                    series = self._series[key] = _Series(labels)
                series.requests += 1
                series.duration_sum += millis
                series.buckets[bisect.bisect_left(BUCKETS, millis)] += 1
                series.request_bytes += received
                series.response_bytes += sent

    def record(
        self, request: RequestView, response: ResponseView, millis: float, sent: int
    ) -> None:
        """One request this workload sent (``reporter="source"``)."""
        service = response.cluster.rsplit("|", 1)[-1] if response.cluster else request.authority
        key = ("source", self.source, service, response.upstream_workload, response.status,
               response.flag)  # fmt: skip
        self._observe(key, request.body_size, millis, sent)

    def record_inbound(
        self, request: RequestView, response: ResponseView, service: str, millis: float, sent: int
    ) -> None:
        """One request this workload served as ``service`` (``reporter="destination"``); the
        caller is named by its mesh's source header (``unknown`` from outside the mesh)."""
        caller = request.header(SOURCE_WORKLOAD_HEADER) or "unknown"
        key = ("destination", caller, service, self.source, response.status, response.flag)
        self._observe(key, request.body_size, millis, sent)

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
