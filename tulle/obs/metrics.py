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

from tulle.obs.finished import Finished
from tulle.obs.pending import Pending

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
    """Request count, duration, and bytes, per source, destination, code and flags. A request's
    :class:`Finished` record is kept and counted later, with the others since, in plain numbers
    per label set (no lock and no per-series objects on the hot path; counting a batch in one
    go costs less than counting each request among the rest of its work), and exposed through
    a prometheus-client collector; TCP figures are prometheus-client counters."""

    def __init__(self, source_workload: str) -> None:
        self.source = source_workload
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()  # the series: folds, and the collector's reads
        self._series: dict[_Key, _Series] = {}
        self._pending = Pending()
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

        self.tls_refusals = Counter(
            "tulle_inbound_tls_refused", "Inbound connections refused by mTLS, by cause.",
            ["reason"], registry=self.registry,
        )  # fmt: skip

    def tls_refused(self, reason: str) -> None:
        """An inbound connection refused by the port's mTLS mode or its handshake."""
        if reason.startswith("plain text refused"):
            cause = "plain_text"
        elif "no workload identity" in reason or "no TLS context" in reason:
            cause = "no_certificate"
        else:
            cause = "handshake_failed"
        self.tls_refusals.labels(cause).inc()

    def tcp_open(self, service: str) -> None:
        """A TCP connection started."""
        self.tcp_opened.labels(self.source, service).inc()

    def tcp_close(self, service: str, sent: int, received: int) -> None:
        """A TCP connection ended, with its byte counts."""
        self.tcp_closed.labels(self.source, service).inc()
        self.tcp_sent.labels(self.source, service).inc(sent)
        self.tcp_received.labels(self.source, service).inc(received)

    def record(self, done: Finished) -> None:
        """One request (its ``reporter`` says whether this workload sent it or served it)."""
        if self._pending.add(done):
            self.fold()

    def fold(self) -> None:
        """Add the requests recorded since the last fold to their series (done every
        ``BATCH`` requests and before every scrape)."""
        with self._lock:
            for done in self._pending.take():
                key = self._key(done)
                series = self._series.get(key)
                if series is None:
                    reporter, source, service, workload, status, flag = key
                    labels = (reporter, source, service, workload or "unknown", str(status), flag)
                    series = self._series[key] = _Series(labels)
                millis = (done.ended - done.started) * 1000
                series.requests += 1
                series.duration_sum += millis
                series.buckets[bisect.bisect_left(BUCKETS, millis)] += 1
                series.request_bytes += done.received
                series.response_bytes += done.sent

    def _key(self, done: Finished) -> _Key:
        """A request's labels: one this workload sent is named by its destination service
        (from the cluster, else the authority it asked for), one it served by its caller
        (``unknown`` from outside the mesh)."""
        if done.reporter == "destination":
            return ("destination", done.caller or "unknown", done.service, self.source,
                    done.status, done.flag)  # fmt: skip
        cluster = done.cluster
        service = cluster.rsplit("|", 1)[-1] if cluster else done.authority
        return ("source", self.source, service, done.upstream_workload, done.status, done.flag)

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
