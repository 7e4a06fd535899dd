"""A workload's tracing as its config says (sidecar and library alike): the tracer its engine
and inbound side consult (None: tracing off, and not one check more per request than that),
and the exporter its sampled requests go to, made again when the endpoint changes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from prometheus_client.registry import CollectorRegistry

from tulle.engine.tracing_config import CONTROL_PLANE, TracingSettings
from tulle.obs.finished import Finished
from tulle.obs.trace_export import INTERVAL, EndpointError, SpanExporter, TraceCounts
from tulle.obs.tracing import Tracer
from tulle.xds.grpc_stream import split_address
from tulle.xds.node import NodeInfo

log = logging.getLogger("tulle.tracing")

TRACE_STORE_PATH: Final = "/v1/traces"
CONTROL_PLANE_HTTP_PORT: Final = 15014


def control_plane_api(xds_address: str) -> str:
    """The control plane's HTTP API where a sidecar is not told it: the host of its xDS
    address, on the control plane's default HTTP port."""
    host, _ = split_address(xds_address)
    return f"http://{f'[{host}]' if ':' in host else host}:{CONTROL_PLANE_HTTP_PORT}"


def node_resource(node: NodeInfo) -> list[tuple[str, str | int | float | bool]]:
    """The OTLP resource of a workload's spans: its workload name as ``service.name`` (the
    control plane's ``service_name`` replaces it), namespace, replica, mode and node id."""
    return [
        ("service.name", node.workload), ("service.namespace", node.namespace),
        ("service.instance.id", f"{node.pod}.{node.namespace}"), ("tulle.mode", node.mode),
        ("tulle.node", node.id), ("telemetry.sdk.name", "tulle"),
    ]  # fmt: skip


class WorkloadTracing:
    """Tracing for one workload process. ``control_plane``: the control plane's HTTP API
    (``http://host:port``), whose trace store takes the spans when the Mesh names no OTLP
    endpoint; ``token``: the bearer token to send (the replica's bootstrap token) or None;
    ``resource``: the process's OTLP resource attributes (``service.name`` and the rest; the
    control plane's ``service_name`` replaces the first when it sends one)."""

    def __init__(
        self,
        control_plane: str,
        resource: list[tuple[str, str | int | float | bool]],
        token: Callable[[], str | None] | None = None,
        registry: CollectorRegistry | None = None,
        interval: float = INTERVAL,
    ) -> None:
        self.control_plane = control_plane.rstrip("/")
        self.interval = interval  # the exporter's rounds, in seconds
        self.resource = resource
        self.token = token
        self.registry = registry
        self.tracer: Tracer | None = None
        self.exporter: SpanExporter | None = None
        self.settings: TracingSettings | None = None
        self._before = (0, 0, 0)  # the counts of exporters replaced
        if registry is not None:
            registry.register(TraceCounts(self.counts))

    def counts(self) -> tuple[int, int, int]:
        """Spans exported, dropped (queue full), dropped (export failed), by every exporter."""
        exporter, before = self.exporter, self._before
        if exporter is None:
            return before
        now = exporter.counts()
        return before[0] + now[0], before[1] + now[1], before[2] + now[2]

    def endpoint(self, settings: TracingSettings) -> str:
        """Where spans go under ``settings``."""
        if settings.endpoint == CONTROL_PLANE:
            return self.control_plane + TRACE_STORE_PATH
        return settings.endpoint

    def update(self, settings: TracingSettings | None) -> Tracer | None:
        """Apply new settings; returns the tracer (None: tracing off). The tracer object stays
        the same across updates that only change the sampling."""
        if settings == self.settings:
            return self.tracer
        self.settings = settings
        if settings is None:
            self.tracer = None
            self._replace(None)
            return None
        if self.tracer is None:
            self.tracer = Tracer(settings.sampling / 100.0)
        else:
            self.tracer.fraction = settings.sampling / 100.0
        endpoint = self.endpoint(settings)
        exporter = self.exporter
        if exporter is None or exporter.endpoint != endpoint:
            self._replace(self._exporter(endpoint, settings.service_name))
        return self.tracer

    def _exporter(self, endpoint: str, service_name: str) -> SpanExporter | None:
        resource = list(self.resource)
        if service_name:
            resource = [("service.name", service_name)] + [
                pair for pair in resource if pair[0] != "service.name"
            ]
        try:
            # Sent to the control plane's store: it knows the token. Anywhere else, no
            # credential of the mesh leaves the workload.
            token = self.token if endpoint.startswith(self.control_plane + "/") else None
            return SpanExporter(endpoint, resource, token, interval=self.interval).start()
        except EndpointError as error:
            log.warning("tracing: %s; spans are not exported", error)
            return None

    def _replace(self, exporter: SpanExporter | None) -> None:
        old = self.exporter
        if old is not None:
            old.stop(timeout=1.0)
            self._before = self.counts()
        self.exporter = exporter

    def record(self, done: Finished) -> None:
        """A finished request with a sampled span: queued for export."""
        exporter = self.exporter
        if exporter is not None:
            exporter.record(done)

    def stop(self) -> None:
        """Export what is queued and stop."""
        self._replace(None)
