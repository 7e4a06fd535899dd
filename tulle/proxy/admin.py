"""The sidecar's two HTTP listeners besides its traffic, as Istio splits them:

- the admin listener (:class:`AdminHandler`, loopback only): readiness, stats, the config dump
  and clusters for whoever is on the sidecar's host, and the routes that change its state
  (``POST /drain``, ``POST /quitquitquit``) or show its requests (``GET /tap``, a live feed of
  them for ``tulle tap``), which need the admin token; every request passes the Host and Origin
  checks of :mod:`tulle.proxy.admin_guard`;
- the read-only stats listener (:class:`StatsHandler`, may bind a pod's address): ``GET /ready``
  and ``GET /stats/prometheus``, nothing else (Istio's 15021 health and 15020 metrics ports).

Neither knows the proxy process (``tulle.proxy.app``): the sidecar hands them what they read and
may call, as a :class:`SidecarView`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The router filter reaches the sidecar packed in google.protobuf.Any, and nothing else here
# imports its type: without this import /config_dump cannot render the listeners. The same for
# the TLS inspector listener filter and the raw_buffer transport socket (mTLS config).
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from google.protobuf.json_format import MessageToDict

from tulle.engine.outbound import Engine
from tulle.obs.tap import Tap
from tulle.proxy.admin_guard import AdminGuard
from tulle.transport.http_server import (
    Request,
    Response,
    error_response,
    json_response,
    text_response,
)
from tulle.transport.pool import Http1Pool
from tulle.transport.tap_http import tap_response
from tulle.xds.client import XdsClient
from tulle.xds.types import SHORT_NAMES

Readiness = Callable[[], str | None]
"""Why the sidecar is not ready for traffic (``DRAINING``, waiting for config), or None."""


@dataclass(frozen=True)
class SidecarView:
    """What the admin listener reads from its sidecar and may ask of it."""

    readiness: Readiness
    exposition: Callable[[], bytes]  # the metrics, in Prometheus' text format
    xds: XdsClient  # config dump: node, versions, NACKs, resources
    engine: Engine  # clusters and their endpoints
    pool: Http1Pool  # HTTP/2 connections and pending requests per cluster
    drain: Callable[[], None]  # stop accepting, let open connections finish
    quit: Callable[[], None]  # stop now (after the drain's grace period)
    tap: Tap  # `tulle tap`'s subscribers


def _not_found(request: Request) -> Response:
    return error_response(404, f"no such endpoint: {request.method} {request.path}")


def _wrong_method(request: Request, allowed: str) -> Response:
    response = error_response(405, f"{request.path} answers {allowed} only, not {request.method}")
    response.headers["allow"] = allowed
    return response


class StatsHandler:
    """The read-only listener: ``GET /ready`` and ``GET /stats/prometheus``; any other path is
    404 and any other method 405, so nothing reached here can change or reveal config."""

    def __init__(self, readiness: Readiness, exposition: Callable[[], bytes]) -> None:
        self.readiness = readiness
        self.exposition = exposition
        self.routes: dict[str, Callable[[], Response]] = {
            "/ready": self.ready,
            "/stats/prometheus": self.stats,
        }

    async def __call__(self, request: Request) -> Response:
        if request.method != "GET":
            response = error_response(
                405, f"the stats listener is read-only: GET only, not {request.method}"
            )
            response.headers["allow"] = "GET"
            return response
        route = self.routes.get(request.path)
        return _not_found(request) if route is None else route()

    def ready(self) -> Response:
        """200 ``LIVE`` when the sidecar has its config and is not draining, else 503 why."""
        reason = self.readiness()
        return text_response("LIVE\n") if reason is None else text_response(f"{reason}\n", 503)

    def stats(self) -> Response:
        return Response(200, self.exposition(), {"content-type": "text/plain; version=0.0.4"})


@dataclass(frozen=True)
class _Route:
    method: str
    changes_state: bool
    answer: Callable[[Request], Response]
    private: bool = False  # needs the token without changing state: it shows requests


class AdminHandler:
    """Routes admin requests, each after ``guard``'s checks."""

    def __init__(self, sidecar: SidecarView, guard: AdminGuard) -> None:
        self.sidecar = sidecar
        self.guard = guard
        stats = StatsHandler(sidecar.readiness, sidecar.exposition)
        self.routes = {
            "/ready": _Route("GET", False, lambda _: stats.ready()),
            "/stats/prometheus": _Route("GET", False, lambda _: stats.stats()),
            "/config_dump": _Route("GET", False, lambda _: json_response(self.config_dump())),
            "/clusters": _Route("GET", False, lambda _: json_response(self.clusters())),
            "/drain": _Route("POST", True, self.drain),
            "/quitquitquit": _Route("POST", True, self.quit),
            "/tap": _Route("GET", False, self.tap, private=True),
        }

    async def __call__(self, request: Request) -> Response:
        route = self.routes.get(request.path)
        if route is not None and route.private:
            refused = self.guard.refusal(request, True, "shows the sidecar's requests")
        else:
            changes_state = (
                route is not None and route.changes_state and route.method == request.method
            )
            refused = self.guard.refusal(request, changes_state)
        if refused is not None:
            return refused
        if route is None:
            return _not_found(request)
        if request.method != route.method:
            return _wrong_method(request, route.method)
        return route.answer(request)

    def drain(self, _: Request) -> Response:
        self.sidecar.drain()
        return text_response("draining\n")

    def tap(self, request: Request) -> Response:
        """``GET /tap?path=&method=&authority=&status=&max=``: the requests from now on, as
        newline-delimited JSON (:mod:`tulle.obs.tap`), until the client goes or ``max`` came."""
        return tap_response(self.sidecar.tap, request)

    def quit(self, _: Request) -> Response:
        self.sidecar.quit()
        return text_response("OK\n")

    def config_dump(self) -> dict[str, Any]:
        xds = self.sidecar.xds
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
        engine, h2 = self.sidecar.engine, self.sidecar.pool.h2
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
                    "h2_connections": h2.open.get(name, 0),
                    "pending": state.counters.pending + h2.pending.get(name, 0),
                    "ejections": state.ejections,
                    # Each EDS priority's share of the calls now, in percent (locality failover).
                    "priority_shares": [round(s, 2) for s in state.plan(now).shares()],
                    "endpoints": [
                        {
                            "address": e.key,
                            "healthy": e.healthy,
                            "ejected": state.outlier.is_ejected(e.key, now),
                            "active": state.active.get(e.key, 0),
                            "weight": e.weight,
                            "locality": e.locality,
                            "priority": e.priority,
                        }
                        for e in state.endpoints
                    ],
                }
            )
        return {"clusters": result}
