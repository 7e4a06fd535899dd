"""The proxy's metrics, named and labelled as Istio's standard metrics with a ``tulle_`` prefix,
through prometheus-client (the library uses the same names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tulle.engine.message import Request, Response

LABELS = ("source_workload", "destination_service", "response_code", "response_flags")
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class ProxyMetrics:
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

    def record(self, request: Request, response: Response, millis: float, sent: int) -> None:
        """One request."""
        service = response.cluster.rsplit("|", 1)[-1] if response.cluster else request.authority
        labels = (self.source, service, str(response.status), response.flag)
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(millis)
        self.request_bytes.labels(*labels).inc(len(request.body))
        self.response_bytes.labels(*labels).inc(sent)

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
