"""Request metrics, the same for sidecar and library: named and labelled as Istio's standard
metrics with a ``tulle_`` prefix, through prometheus-client. Both ends of a call record it:
the caller with ``reporter="source"``, the callee with ``reporter="destination"``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

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


class MeshMetrics:
    """Request count, duration, and bytes, per source, destination, code and flags."""

    def __init__(self, source_workload: str) -> None:
        self.source = source_workload
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tulle_requests", "Requests handled.", LABELS, registry=self.registry
        )
        self.duration = Histogram(
            "tulle_request_duration_milliseconds", "Request duration.", LABELS,
            buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.request_bytes = Counter(
            "tulle_request_bytes", "Request body bytes.", LABELS, registry=self.registry
        )
        self.response_bytes = Counter(
            "tulle_response_bytes", "Response body bytes.", LABELS, registry=self.registry
        )
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
        self._children: dict[tuple[str, str, str, str, int, str], tuple[Any, Any, Any, Any]] = {}

    def tcp_open(self, service: str) -> None:
        """A TCP connection started."""
        self.tcp_opened.labels(self.source, service).inc()

    def tcp_close(self, service: str, sent: int, received: int) -> None:
        """A TCP connection ended, with its byte counts."""
        self.tcp_closed.labels(self.source, service).inc()
        self.tcp_sent.labels(self.source, service).inc(sent)
        self.tcp_received.labels(self.source, service).inc(received)

    def _series(
        self, reporter: str, source: str, service: str, workload: str, status: int, flag: str
    ) -> tuple[Any, Any, Any, Any]:
        """The four labelled series for one label set, looked up once and then cached (the
        label lookup is most of prometheus-client's cost per request)."""
        key = (reporter, source, service, workload, status, flag)
        series = self._children.get(key)
        if series is None:
            labels = (reporter, source, service, workload or "unknown", str(status), flag)
            series = (
                self.requests.labels(*labels),
                self.duration.labels(*labels),
                self.request_bytes.labels(*labels),
                self.response_bytes.labels(*labels),
            )
            self._children[key] = series
        return series

    def record(
        self, request: RequestView, response: ResponseView, millis: float, sent: int
    ) -> None:
        """One request this workload sent (``reporter="source"``)."""
        service = response.cluster.rsplit("|", 1)[-1] if response.cluster else request.authority
        self._observe(
            self._series("source", self.source, service, response.upstream_workload,
                         response.status, response.flag),
            request, millis, sent,
        )  # fmt: skip

    def record_inbound(
        self, request: RequestView, response: ResponseView, service: str, millis: float, sent: int
    ) -> None:
        """One request this workload served as ``service`` (``reporter="destination"``); the
        caller is named by its mesh's source header (``unknown`` from outside the mesh)."""
        caller = request.header(SOURCE_WORKLOAD_HEADER) or "unknown"
        self._observe(
            self._series("destination", caller, service, self.source, response.status,
                         response.flag),
            request, millis, sent,
        )  # fmt: skip

    @staticmethod
    def _observe(
        series: tuple[Any, Any, Any, Any], request: RequestView, millis: float, sent: int
    ) -> None:
        requests, duration, request_bytes, response_bytes = series
        requests.inc()
        duration.observe(millis)
        if request.body_size:
            request_bytes.inc(request.body_size)
        response_bytes.inc(sent)

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
