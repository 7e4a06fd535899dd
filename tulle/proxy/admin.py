"""The admin listener (localhost): readiness, stats, config dump, clusters, drain, quit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The router filter reaches the sidecar packed in google.protobuf.Any, and nothing else here
# imports its type: without this import /config_dump cannot render the listeners.
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from google.protobuf.json_format import MessageToDict

from tulle.transport.http_server import (
    Request,
    Response,
    error_response,
    json_response,
    text_response,
)
from tulle.xds.types import SHORT_NAMES

if TYPE_CHECKING:
    from tulle.proxy.app import Proxy


class AdminHandler:
    """Routes admin requests."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    async def __call__(self, request: Request) -> Response:
        path = request.path
        if path == "/ready":
            if self.proxy.draining:
                return text_response("DRAINING\n", 503)
            if not self.proxy.xds.ready.is_set():
                return text_response("waiting for config from the control plane\n", 503)
            return text_response("LIVE\n")
        if path == "/stats/prometheus":
            body = self.proxy.metrics.exposition()
            return Response(200, body, {"content-type": "text/plain; version=0.0.4"})
        if path == "/config_dump":
            return json_response(self.config_dump())
        if path == "/clusters":
            return json_response(self.clusters())
        if path == "/drain" and request.method == "POST":
            self.proxy.start_drain()
            return text_response("draining\n")
        if path == "/quitquitquit" and request.method == "POST":
            self.proxy.quit()
            return text_response("OK\n")
        return error_response(404, f"no admin endpoint {request.method} {path}")

    def config_dump(self) -> dict[str, Any]:
        xds = self.proxy.xds
        return {
            "node": xds.node_id,
            "connected": xds.connected,
            "versions": {SHORT_NAMES[t]: v for t, v in xds.versions.items()},
            "nacks": {SHORT_NAMES[t]: m for t, m in xds.last_nack.items()},
            "resources": {
                SHORT_NAMES[t]: [MessageToDict(r) for _, r in sorted(items.items())]
                for t, items in xds.resources.items()
            },
        }

    def clusters(self) -> dict[str, Any]:
        engine = self.proxy.engine
        now = engine.clock()
        result = []
        for name, state in sorted(engine.clusters.items()):
            result.append(
                {
                    "name": name,
                    "lb": state.spec.lb,
                    "requests": state.counters.requests,
                    "retries": state.counters.retries,
                    "overflows": state.overflows,
                    "connections": state.counters.connections,
                    "h2_connections": self.proxy.pool.h2.open.get(name, 0),
                    "pending": state.counters.pending + self.proxy.pool.h2.pending.get(name, 0),
                    "ejections": state.ejections,
                    "endpoints": [
                        {
                            "address": e.key,
                            "healthy": e.healthy,
                            "ejected": state.outlier.is_ejected(e.key, now),
                            "active": state.active.get(e.key, 0),
                            "weight": e.weight,
                            "locality": e.locality,
                        }
                        for e in state.endpoints
                    ],
                }
            )
        return {"clusters": result}
