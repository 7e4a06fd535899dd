"""Request metrics, the same for sidecar and library: named and labelled as Istio's standard
metrics with a ``tulle_`` prefix, through prometheus-client. Both ends of a call record it:
the caller with ``reporter="source"``, the callee with ``reporter="destination"``.

Identity labels follow Istio's stats filter (istio/proxy ``istio_stats.cc``): the callee labels
the caller with the SPIFFE id of its certificate (``source_principal``), its own
(``destination_principal``) and ``connection_security_policy`` ``mutual_tls``, or ``unknown``,
``unknown`` and ``none`` over plain text; the caller labels itself and the upstream with the ids
of the mTLS connection the request went over (``unknown`` over plain text), and
``connection_security_policy="unknown"``, as Istio's client side does. The callee's
``source_workload`` is the service account of the caller's certificate over mTLS (a header a
client writes never wins there), else what the ``x-tulle-source-workload`` header claims.

The TCP metrics (``tulle_tcp_*``) carry the same identity labels, worked out the same way once
per connection (when its peer's identity is known: inbound when the caller's connection is
handed on after its handshake, outbound once the upstream's handshake is done), with the
``reporter`` and ``destination_workload``; a TCP caller has no header, so over plain text its
``source_workload`` is ``unknown``.

Also: the workload certificate's expiry (a timestamp gauge), inbound connections refused by mTLS
and outbound mTLS failures, by reason."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tulle.obs.connection import TcpConnection
from tulle.obs.finished import Finished
from tulle.obs.pending import Pending

SOURCE_WORKLOAD_HEADER: Final = "x-tulle-source-workload"
"""Sent with every routed request: the caller's workload, for the callee's inbound metrics.
Read only from plain-text callers; over mTLS the caller's certificate says who it is."""

LABELS: Final = (
    "reporter",
    "source_workload",
    "source_principal",
    "destination_service",
    "destination_workload",
    "destination_principal",
    "response_code",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS: Final = (
    "reporter",
    "source_workload",
    "source_principal",
    "destination_service",
    "destination_workload",
    "destination_principal",
    "connection_security_policy",
)
BUCKETS: Final = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_BOUNDS: Final = (*(f"{b:g}" for b in BUCKETS), "+Inf")  # the buckets' ``le`` labels
# reporter, source (the claimed caller, or empty), destination service and workload, status,
# flags, peer principal (empty over plain text)
_Key = tuple[str, str, str, str, int, str, str]
UNKNOWN: Final = "unknown"

Certificate = Callable[[], "tuple[str, float] | None"]
"""The workload's current certificate: its SPIFFE id and its not-after (POSIX seconds); None
when it has none."""


def workload_of(principal: str) -> str:
    """The workload a SPIFFE id names: its service account
    (``spiffe://td/ns/shop/sa/frontend`` → ``frontend``), which in local mode is the workload's
    name unless its ``serviceAccount`` says otherwise (workloads sharing one are reported
    under it); ``unknown`` when the id has no service account."""
    _, found, account = principal.rpartition("/sa/")
    return account if found and account and "/" not in account else UNKNOWN


def upstream_tls_cause(reason: str) -> str | None:
    """The label of an outbound mTLS failure, from the ``UpstreamError`` message (None: not a
    TLS failure, such as a refused TCP connection)."""
    if reason.startswith("no valid workload certificate"):
        return "no_certificate"
    if reason.endswith("(mTLS)"):  # "timed out after 1s (mTLS)"
        return "timeout"
    if not reason.startswith("mTLS: "):
        return None
    detail = reason[6:]
    if detail.startswith(("upstream peer identity", "peer identity", "peer certificate",
                          "peer presented")):  # fmt: skip
        return "peer_identity"
    return "handshake_failed"


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


class _TcpSeries:
    """One TCP label set's counters (prometheus-client children, bound once)."""

    __slots__ = ("closed", "opened", "received", "sent")

    def __init__(self, metrics: MeshMetrics, labels: tuple[str, ...]) -> None:
        self.opened = metrics.tcp_opened.labels(*labels)
        self.closed = metrics.tcp_closed.labels(*labels)
        self.sent = metrics.tcp_sent.labels(*labels)
        self.received = metrics.tcp_received.labels(*labels)


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


class _CertificateCollector(Collector):
    """The workload certificate's not-after as a timestamp gauge, read at scrape time."""

    def __init__(self, workload: str, certificate: Certificate) -> None:
        self.workload = workload
        self.certificate = certificate

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "tulle_workload_certificate_expiration_timestamp_seconds",
            "When the workload certificate expires (POSIX seconds).",
            labels=("workload", "principal"),
        )
        current = self.certificate()
        if current is not None:
            gauge.add_metric((self.workload, current[0]), current[1])
        yield gauge


class MeshMetrics:
    """Request count, duration, and bytes, per source, destination, code and flags. A request's
    :class:`Finished` record is kept and counted later, with the others since, in plain numbers
    per label set (no lock and no per-series objects on the hot path; counting a batch in one
    go costs less than counting each request among the rest of its work; label values, the
    principals' included, are worked out once per series), and exposed through a
    prometheus-client collector; TCP and TLS figures are prometheus-client counters."""

    def __init__(self, source_workload: str) -> None:
        self.source = source_workload
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()  # the series: folds, and the collector's reads
        self._series: dict[_Key, _Series] = {}
        self._pending = Pending()
        self._certificate: Certificate = _no_certificate
        # TCP label sets by (reporter, service, upstream workload, peer principal)
        self._tcp: dict[tuple[str, str, str, str], _TcpSeries] = {}
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
        self.tcp_denials = Counter(
            "tulle_inbound_tcp_denied",
            "Inbound TCP connections closed by AuthorizationPolicy (network RBAC) before any "
            "byte reached the app, by the policy that denied (none: no ALLOW policy matched).",
            ["destination_service", "policy"], registry=self.registry,
        )  # fmt: skip
        self.upstream_tls_failures = Counter(
            "tulle_upstream_tls_failures",
            "Outbound mTLS connections that failed, by cause: the handshake, the upstream's "
            "identity, this workload's certificate, or a timeout.",
            ["reason"], registry=self.registry,
        )  # fmt: skip

    def use_certificate(self, certificate: Certificate) -> None:
        """Where this workload's certificate is read from (its identity is the
        ``source_principal``/``destination_principal`` of its own side of mTLS requests, its
        expiry a gauge)."""
        self._certificate = certificate
        self.registry.register(_CertificateCollector(self.source, certificate))

    def upstream_tls_failed(self, reason: str) -> None:
        """An outbound connection to an endpoint in the mesh failed; ``reason`` is the
        ``UpstreamError`` message (failures that are not TLS's are not counted here)."""
        cause = upstream_tls_cause(reason)
        if cause is not None:
            self.upstream_tls_failures.labels(cause).inc()

    def tls_refused(self, reason: str) -> None:
        """An inbound connection refused by the port's mTLS mode or its handshake."""
        if reason.startswith("plain text refused"):
            cause = "plain_text"
        elif "no workload identity" in reason or "no TLS context" in reason:
            cause = "no_certificate"
        else:
            cause = "handshake_failed"
        self.tls_refusals.labels(cause).inc()

    def tcp_denied(self, service: str, policy: str) -> None:
        """An inbound TCP connection to ``service`` refused by ``policy``'s network RBAC."""
        self.tcp_denials.labels(service, policy).inc()

    def tcp_open(self, connection: TcpConnection) -> None:
        """A TCP connection opened, its peer's identity known: its label set is resolved
        (once per connection) and kept on it for :meth:`tcp_close`."""
        key = (connection.reporter, connection.service, connection.upstream_workload,
               connection.peer_principal)  # fmt: skip
        series = self._tcp.get(key)
        if series is None:
            series = self._tcp[key] = _TcpSeries(self, self._tcp_labels(key))
        connection.series = series
        series.opened.inc()

    def tcp_close(self, connection: TcpConnection) -> None:
        """A TCP connection ended, with its byte counts (``sent``: the bytes from the side that
        opened it, toward the server)."""
        if connection.series is None:  # it ended before its peer was known
            self.tcp_open(connection)
        series = connection.series
        assert isinstance(series, _TcpSeries)
        series.closed.inc()
        series.sent.inc(connection.received)
        series.received.inc(connection.sent)

    def _tcp_labels(self, key: tuple[str, str, str, str]) -> tuple[str, ...]:
        """A TCP label set's values (in ``TCP_LABELS`` order), as :meth:`_labels` for
        requests; a TCP caller has no header, so over plain text it is ``unknown``."""
        reporter, service, workload, peer = key
        current = self._certificate()
        own = current[0] if peer and current is not None else UNKNOWN
        if reporter == "destination":
            caller = workload_of(peer) if peer else UNKNOWN
            return ("destination", caller, peer or UNKNOWN, service, self.source, own,
                    "mutual_tls" if peer else "none")  # fmt: skip
        return ("source", self.source, own, service, workload or UNKNOWN, peer or UNKNOWN,
                UNKNOWN)  # fmt: skip

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
                    series = self._series[key] = _Series(self._labels(key))
                millis = (done.ended - done.started) * 1000
                series.requests += 1
                series.duration_sum += millis
                series.buckets[bisect.bisect_left(BUCKETS, millis)] += 1
                series.request_bytes += done.received
                series.response_bytes += done.sent

    def _key(self, done: Finished) -> _Key:
        """A request's series: one this workload sent is named by its destination service
        (from the cluster, else the authority it asked for), one it served by its caller."""
        if done.reporter == "destination":
            return ("destination", done.caller, done.service, self.source, done.status,
                    done.flag, done.peer_principal)  # fmt: skip
        cluster = done.cluster
        service = cluster.rsplit("|", 1)[-1] if cluster else done.authority
        return ("source", self.source, service, done.upstream_workload, done.status, done.flag,
                done.peer_principal)  # fmt: skip

    def _labels(self, key: _Key) -> tuple[str, ...]:
        """A series' label values (in ``LABELS`` order), worked out once per series."""
        reporter, source, service, workload, status, flag, peer = key
        current = self._certificate()
        own = current[0] if peer and current is not None else UNKNOWN
        if reporter == "destination":
            caller = workload_of(peer) if peer else (source or UNKNOWN)
            return ("destination", caller, peer or UNKNOWN, service, workload, own,
                    str(status), flag, "mutual_tls" if peer else "none")  # fmt: skip
        return ("source", source, own, service, workload or UNKNOWN, peer or UNKNOWN,
                str(status), flag, UNKNOWN)  # fmt: skip

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)


def _no_certificate() -> tuple[str, float] | None:
    return None
