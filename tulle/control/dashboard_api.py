"""The dashboard on the control plane's HTTP port: its pages (the built front end, static files
from the directory ``tulle controlplane`` hands in: ``tulle.dashboard``'s), the browser's way
in (:mod:`tulle.control.sessions`), and the JSON its pages read:

- ``GET /api/v1/graph?window=S``: the service graph over the last S seconds;
- ``GET /api/v1/services`` and ``/api/v1/services/{name}``: a service's versions and split,
  endpoints (health, ejections), breaker overflows, traffic lately, the config that applies to it
  with its findings, its proxies' sync state and NACKs;
- ``GET /api/v1/config``: every resource in force, where it came from, its findings;
- ``POST /api/v1/dashboard/logins`` (admin): a one-time login code for ``tulle dashboard``.

The traces page reads the trace store's own API (``/api/v1/traces``). A dashboard session may
read these and the other ``GET`` routes :func:`readable` names, nothing else."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tulle.api.findings import Finding
from tulle.control.auth import Caller, require_admin
from tulle.control.config import ConfigSources
from tulle.control.prometheus import PrometheusError
from tulle.control.registry import Endpoint
from tulle.control.sessions import Sessions
from tulle.control.status import node_status
from tulle.control.telemetry import Delta, TrafficSource
from tulle.control.translate import Resources
from tulle.control.views import (
    applies_to,
    cluster_rows,
    endpoint_rows,
    graph,
    service_traffic,
    split,
    workloads_of,
)
from tulle.obs.scrape import short_host
from tulle.transport.http_server import Request, Response, error_response, json_response
from tulle.xds.node import NodeInfo
from tulle.xds.server import Connection

API = "/api/v1"
PAGES = "/dashboard"
READABLE = ("/graph", "/services", "/config", "/traces", "/proxy-status", "/resources",
            "/config-status")  # fmt: skip
"""The ``/api/v1`` routes a dashboard session may ``GET``."""

WINDOW_SECONDS = 10.0
"""The graph's default span: short, so a change shows within seconds."""

HEADERS = {
    # Scripts and styles only from here; no framing; no Referer (the login URL carries a code).
    "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class DashboardOptions:
    """What ``tulle controlplane`` hands the dashboard: its built files, and where traffic
    figures come from (a ``file_sd`` targets file to scrape, or a Prometheus)."""

    assets: Path | None = None
    scrape_targets: Path | None = None
    prometheus: str | None = None


class _Endpoints(Protocol):
    def endpoints(self) -> tuple[Endpoint, ...]: ...


class DashboardPlane(Protocol):
    """The control plane as the dashboard reads it."""

    @property
    def kube(self) -> _Endpoints | None: ...

    @property
    def config(self) -> ConfigSources: ...

    @property
    def registry(self) -> _Endpoints: ...

    @property
    def connections(self) -> Mapping[int, Connection]: ...

    def node_resources(self, node: NodeInfo) -> Resources: ...


def readable(path: str) -> bool:
    """Whether a dashboard session may ``GET`` ``path`` (under ``/api/v1``)."""
    rest = path[len(API) :]
    return any(rest == r or rest.startswith(f"{r}/") for r in READABLE)


class DashboardApi:
    """The dashboard's pages and data."""

    def __init__(
        self,
        plane: DashboardPlane,
        sessions: Sessions,
        traffic: TrafficSource | None,
        assets: Path | None,
    ) -> None:
        self.plane = plane
        self.sessions = sessions
        self.traffic = traffic
        self.files: dict[str, bytes] = {}
        if assets is not None:  # read once: nothing outside the built files can be served
            for path in sorted(assets.rglob("*")):
                if path.is_file():
                    self.files[path.relative_to(assets).as_posix()] = path.read_bytes()

    # --- pages (no credential needed: the data behind them needs one) ---------------------

    def handles_page(self, path: str) -> bool:
        """Whether ``path`` is one of the dashboard's pages or files."""
        return path == PAGES or path.startswith(f"{PAGES}/")

    def page(self, request: Request) -> Response:
        """A file of the front end, or the login."""
        if request.method != "GET":
            return error_response(405, "the dashboard's pages are read with GET")
        rest = request.path[len(PAGES) :].lstrip("/")
        if request.path == PAGES:
            return Response(308, b"", {"location": f"{PAGES}/"})
        if rest == "login":
            return self.login(request)
        name = rest or "index.html"
        body = self.files.get(name)
        if body is None:
            if not self.files:
                return error_response(
                    404, "this control plane serves no dashboard (its files were not found)"
                )
            return error_response(404, f"no dashboard file {name[:80]!r}")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        cache = "no-cache" if name == "index.html" else "public, max-age=31536000, immutable"
        return Response(
            200, body, {"content-type": content_type, "cache-control": cache, **HEADERS}
        )

    def login(self, request: Request) -> Response:
        """Swap a one-time code for a session cookie, then go to the dashboard."""
        code = request.param("code") or ""
        session = self.sessions.redeem(code) if code else None
        if session is None:
            body = (
                b"<!doctype html><title>Tulle dashboard</title><p>This login link is spent or "
                b"has expired (a link works once, within a minute). Run <code>tulle dashboard"
                b"</code> again.</p>"
            )
            return Response(401, body, {"content-type": "text/html; charset=utf-8", **HEADERS})
        return Response(
            303,
            b"",
            {
                "location": f"{PAGES}/",
                "set-cookie": self.sessions.cookie(session),
                "cache-control": "no-store",
                **HEADERS,
            },
        )

    # --- data -----------------------------------------------------------------------------

    def handles_api(self, path: str) -> bool:
        """Whether ``path`` is one of this module's API routes."""
        rest = path[len(API) :]
        return rest in ("/graph", "/services", "/config", "/dashboard/logins") or rest.startswith(
            "/services/"
        )

    async def api(self, request: Request, caller: Caller) -> Response:
        """One of the data routes (the caller is authenticated)."""
        path, method = request.path.rstrip("/"), request.method
        rest = path[len(API) :]
        if rest == "/dashboard/logins":
            require_admin(caller, "make a dashboard login")
            if method != "POST":
                return error_response(405, "use POST to make a dashboard login code")
            code = self.sessions.new_code()
            return json_response({"code": code, "path": f"{PAGES}/login?code={code}"})
        require_admin(caller, f"{method[:10]} {path[:80]}", read=method == "GET")
        if method != "GET":
            return error_response(405, f"{method[:10]} is not allowed on {path[:80]}; use GET")
        try:
            return await self._read(request, rest)
        except PrometheusError as error:  # the figures' source is away: say which and why
            return error_response(502, f"traffic figures unavailable: {error}")

    async def _read(self, request: Request, rest: str) -> Response:
        if rest == "/graph":
            window = _window(request)
            if isinstance(window, Response):
                return window
            delta = await self._delta(window)
            shown = graph(delta, self._endpoints())
            return json_response({**shown, "window": window, "source": self._source()})
        if rest == "/services":
            return json_response({"services": self._services()})
        if rest == "/config":
            return await asyncio.to_thread(self._config)
        return await self._service(rest[len("/services/") :])

    async def _delta(self, seconds: float) -> Delta:
        if self.traffic is None:
            return Delta(seconds)
        return await self.traffic.delta(seconds)

    async def _series(self) -> list[Delta]:
        return await self.traffic.series(5, 10.0) if self.traffic is not None else []

    def _source(self) -> str:
        return self.traffic.description if self.traffic is not None else "none"

    def _endpoints(self) -> tuple[Endpoint, ...]:
        kube = self.plane.kube
        return self.plane.registry.endpoints() + (kube.endpoints() if kube else ())

    def _services(self) -> list[dict[str, Any]]:
        services: dict[str, set[str]] = {}
        for workload, facts in workloads_of(self._endpoints()).items():
            services.setdefault(facts["service"], set()).add(workload)
        return [{"name": name, "workloads": sorted(w)} for name, w in sorted(services.items())]

    async def _service(self, name: str) -> Response:
        known = {s["name"]: s["workloads"] for s in self._services()}
        if name not in known:
            return error_response(
                404, f"no service {name[:80]!r}; services: {', '.join(sorted(known)) or 'none'}"
            )
        workloads = set(known[name])
        delta = await self._delta(60.0)
        series = await self._series()
        endpoints = self._endpoints()
        versions = workloads_of(e for e in endpoints if short_host(e.service) == name)
        config = await asyncio.to_thread(self._config_of, name)
        return json_response(
            {
                "name": name,
                "versions": [{"workload": w, **versions[w]} for w in sorted(versions)],
                "split": split(name, delta),
                "endpoints": endpoint_rows(name, endpoints, delta),
                "clusters": cluster_rows(name, delta),
                "traffic": service_traffic(name, workloads, series),
                "config": config,
                "proxies": self._proxies(workloads),
                "source": self._source(),
            }
        )

    def _proxies(self, workloads: set[str]) -> list[dict[str, Any]]:
        """The sync state of the service's proxies and libraries (each type sent, ACKed,
        current, and its last NACK)."""
        rows = []
        for connection in self.plane.connections.values():
            if connection.node.workload in workloads:
                status = node_status(connection, self.plane.node_resources(connection.node))
                rows.append(status)
        return sorted(rows, key=lambda r: r["node"])

    def _config(self) -> Response:
        return json_response(
            {"items": self._resources(lambda _: True), "files": self._file_findings()}
        )

    def _config_of(self, service: str) -> list[dict[str, Any]]:
        return self._resources(lambda data: applies_to(service, data))

    def _file_findings(self) -> list[dict[str, Any]]:
        """Findings that belong to no resource (a file that does not parse, say)."""
        return [f.to_dict() for f in self.plane.config.file_findings if f.kind == "-"]

    def _resources(self, wanted: Any) -> list[dict[str, Any]]:
        config = self.plane.config
        validation = config.validation
        sources = config.sources()
        findings = _by_resource(
            [*config.file_findings, *(validation.findings if validation else ())]
        )
        items = []
        for item in validation.loaded if validation else ():
            resource = item.resource
            data = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
            if not wanted(data):
                continue
            key = (resource.KIND, resource.namespace, resource.name)
            items.append(
                {
                    "kind": resource.KIND,
                    "namespace": resource.namespace,
                    "name": resource.name,
                    "source": sources.get(key, "-"),
                    "findings": _unique(findings.get(key, [])),
                    "resource": data,
                }
            )
        return items


def _unique(findings: list[Finding]) -> list[dict[str, Any]]:
    """Findings once each (a file's findings are also the validation's), in file order."""
    return [f.to_dict() for f in sorted(set(findings))]


def _by_resource(findings: Iterable[Finding]) -> dict[tuple[str, str, str], list[Finding]]:
    found: dict[tuple[str, str, str], list[Finding]] = {}
    for finding in findings:
        found.setdefault((finding.kind, finding.namespace, finding.name), []).append(finding)
    return found


def _window(request: Request) -> float | Response:
    text = request.param("window")
    if not text:
        return WINDOW_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= 3600:
        return error_response(400, f"window: {text[:20]!r} is not a number of seconds, 1-3600")
    return seconds
