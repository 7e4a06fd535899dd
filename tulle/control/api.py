"""The control plane's HTTP API (port 15014): config (apply, get, delete), the service registry
(register, deregister), proxy status and config, the CA's roots and their rotation, health, the
trace store (OTLP in at ``POST /v1/traces``, queries at ``/api/v1/traces``:
:mod:`tulle.control.traces`). JSON in and out.

Every route but ``GET /healthz`` is authenticated (:mod:`tulle.control.auth`): the admin token
may do everything; a workload's token only registers and deregisters endpoints of its own
namespace and service account, so no process can take over another service's traffic.

What it refuses before any work is done, and why, is in docs/control-plane.md ("What the API
refuses"): bodies past a size (413), text that is not UTF-8, JSON nested too deeply, names that
are not DNS labels, more applies than :data:`MAX_WAITING_APPLIES` at once (429)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from tulle.api.names import check_dns_label, check_dns_subdomain
from tulle.control.auth import AccessDenied, ApiAuth, Caller, require_admin
from tulle.control.bodies import MAX_APPLY_BYTES, BodyError, check_size, json_body, utf8_text
from tulle.control.config import APPLIED, ChangeResult, ConfigSources
from tulle.control.dashboard_api import DashboardApi, readable
from tulle.control.kinds import canonical_kind, kind_names
from tulle.control.leadership import Leadership
from tulle.control.registry import Endpoint, RegistrationError, endpoint_from_dict
from tulle.control.rotation import RootRotation
from tulle.control.snapshot import Snapshot
from tulle.control.status import node_status, sent_config
from tulle.control.store import ResourceKey
from tulle.control.traces import query as trace_query
from tulle.control.traces.receiver import HTTP_PATH as OTLP_HTTP_PATH
from tulle.control.traces.receiver import TraceReceiver
from tulle.control.translate import Resources
from tulle.transport.http_server import (
    Request,
    Response,
    error_response,
    json_response,
    text_response,
)
from tulle.xds.node import NodeInfo
from tulle.xds.server import Connection
from tulle.xds.types import BY_SHORT_NAME, SECRET

API = "/api/v1"

MAX_FINDINGS = 100
"""Findings listed in one answer; past that, a last line says how many more there are."""

MAX_WAITING_APPLIES = 8
"""Applies waiting for, or in, validation at once; one more is refused with 429."""

MAX_FILENAME = 255


def _findings(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_FINDINGS:
        return lines
    return [*lines[:MAX_FINDINGS], f"... and {len(lines) - MAX_FINDINGS} more findings"]


def _shown(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Registry(Protocol):
    """The registry as the API reads it."""

    def endpoints(self) -> tuple[Endpoint, ...]: ...

    def get(self, endpoint_id: str) -> Endpoint | None:
        """The registered endpoint with that id, if any."""
        ...


class ClusterRegistry(Protocol):
    """The Kubernetes registry (``--registry kubernetes``), as the API shows it."""

    def endpoints(self) -> tuple[Endpoint, ...]: ...

    def status(self) -> dict[str, Any]: ...


class Plane(Protocol):
    """What the API serves from and changes: the control plane (tulle.control.app), handed in."""

    @property
    def kube(self) -> ClusterRegistry | None: ...

    @property
    def config(self) -> ConfigSources: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def applies_in_flight(self) -> int: ...

    @property
    def push_pending(self) -> bool: ...

    @property
    def connections(self) -> Mapping[int, Connection]: ...

    async def apply(self, text: str, filename: str) -> ChangeResult: ...

    async def delete(self, key: ResourceKey) -> ChangeResult: ...

    async def register(self, endpoint: Endpoint) -> bool: ...

    async def deregister(self, endpoint_id: str) -> bool: ...

    def node_resources(self, node: NodeInfo) -> Resources: ...

    def services_of(self, namespace: str, service_account: str) -> frozenset[str]:
        """The service hosts the config's Workloads of that identity serve."""
        ...

    def secrets(self, node: NodeInfo) -> list[dict[str, Any]]:
        """The node's certificate (as issued) and the trust bundle."""
        ...

    @property
    def rotation(self) -> RootRotation | None:
        """The CA's root rotation (None until the CA is started)."""
        ...

    @property
    def leadership(self) -> Leadership:
        """Whether this replica leads (rotation steps are the leader's)."""
        ...


class ApiHandler:
    """Routes requests to the control plane, each after its caller is authenticated."""

    def __init__(
        self,
        plane: Plane,
        auth: ApiAuth,
        metrics: CollectorRegistry,
        traces: TraceReceiver | None = None,
        dashboard: DashboardApi | None = None,
    ) -> None:
        self.plane = plane
        self.auth = auth
        self.metrics = metrics
        self.dashboard = dashboard  # its pages, and the data they read
        self.traces = traces  # OTLP in (POST /v1/traces), the trace store's queries

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except BodyError as error:
            return error_response(error.status, str(error))
        except AccessDenied as refusal:
            return refusal.response()

    async def _route(self, request: Request) -> Response:
        path, method = request.path.rstrip("/") or "/", request.method
        if path == "/healthz" and method == "GET":
            return text_response("ok\n")
        if path == "/metrics" and method == "GET":  # for Prometheus: counts, no secrets
            body = generate_latest(self.metrics)
            return Response(200, body, {"content-type": CONTENT_TYPE_LATEST})
        if path == OTLP_HTTP_PATH and self.traces is not None:  # OTLP/HTTP: its own auth
            return await self.traces.http(request)
        dashboard = self.dashboard
        if dashboard is not None and dashboard.handles_page(path):  # its data needs a login
            return dashboard.page(request)
        caller = self.auth.caller(request)
        if path == f"{API}/endpoints":
            return await self.endpoints(request, caller)
        if dashboard is not None and dashboard.handles_api(path):
            return await dashboard.api(request, caller)
        if path.startswith(f"{API}/"):  # a dashboard session reads some
            read = method == "GET" and readable(path)
            require_admin(caller, f"{_shown(method)} {_shown(path)}", read=read)
        if path == f"{API}/resources":
            if method == "GET":
                return await self.get_resources(request)
            if method == "POST":
                return await self.apply(request)
            return error_response(
                405, f"{_shown(method)} is not allowed on {_shown(path)}; use GET or POST"
            )
        if path.startswith(f"{API}/resources/") and method == "DELETE":
            return await self.delete_resource(path[len(f"{API}/resources/") :])
        if path == f"{API}/proxy-status" and method == "GET":
            return self.proxy_status()
        if path == f"{API}/proxy-config" and method == "GET":
            return self.proxy_config(request)
        if path == f"{API}/config-status" and method == "GET":
            return self.config_status()
        if self.traces is not None and (
            path == trace_query.PATH or path.startswith(f"{trace_query.PATH}/")
        ):
            return trace_query.respond(self.traces.store, request)
        if path == f"{API}/ca" or path.startswith(f"{API}/ca/"):
            return self.ca(request, path[len(f"{API}/ca") :].lstrip("/"))
        return error_response(404, f"no API at {_shown(method)} {_shown(path)}")

    # --- config ---------------------------------------------------------------------------

    async def apply(self, request: Request) -> Response:
        filename = request.headers.get("x-tulle-filename", "<request>")
        if len(filename) > MAX_FILENAME or not filename.isprintable() or filename == APPLIED:
            return error_response(
                400,
                f"header x-tulle-filename: {_shown(filename)!r} is not a file name to report "
                f"(printable, at most {MAX_FILENAME} characters)",
            )
        check_size(request.body, MAX_APPLY_BYTES, filename)
        text = utf8_text(request.body, filename)
        waiting = self.plane.applies_in_flight
        if waiting >= MAX_WAITING_APPLIES:
            return error_response(
                429, f"{waiting} applies are being validated already; retry shortly"
            )
        result = await self.plane.apply(text, filename)
        lines = _findings([f.format() for f in result.findings])
        if not result.accepted:
            return error_response(400, "config rejected; nothing changed", findings=lines)
        return json_response(
            {
                "created": [_ref(k) for k in result.created],
                "updated": [_ref(k) for k in result.updated],
                "unchanged": [_ref(k) for k in result.unchanged],
                "warnings": lines,
            }
        )

    async def get_resources(self, request: Request) -> Response:
        kind_text = request.param("kind")
        kind = canonical_kind(kind_text) if kind_text else None
        if kind_text and kind is None:
            return error_response(
                400, f"unknown kind {_shown(kind_text)!r}; kinds: {', '.join(kind_names())}"
            )
        namespace, name = request.param("namespace"), request.param("name")
        # Dumping a large config is CPU work: done in a thread, the loop keeps serving.
        return await asyncio.to_thread(self._resources, kind, namespace, name)

    def _resources(self, kind: str | None, namespace: str | None, name: str | None) -> Response:
        items = []
        validation = self.plane.config.validation
        sources = self.plane.config.sources()
        for item in validation.loaded if validation else ():
            r = item.resource
            if kind and kind != r.KIND:
                continue
            if namespace and r.namespace != namespace:
                continue
            if name and r.name != name:
                continue
            key = (r.KIND, r.namespace, r.name)
            items.append(
                {
                    "source": sources.get(key, "-"),
                    "resource": r.model_dump(mode="json", by_alias=True, exclude_none=True),
                }
            )
        if name and not items:
            where = f"{_shown(namespace or 'default')}/{_shown(name)}"
            return error_response(404, f"no {kind or 'resource'} {where}")
        return json_response({"items": items})

    async def delete_resource(self, rest: str) -> Response:
        parts = rest.split("/")
        if len(parts) != 3:
            return error_response(400, "use DELETE /api/v1/resources/KIND/NAMESPACE/NAME")
        kind = canonical_kind(parts[0])
        if kind is None:
            return error_response(
                400, f"unknown kind {_shown(parts[0])!r}; kinds: {', '.join(kind_names())}"
            )
        for field, check, value in (
            ("namespace", check_dns_label, parts[1]),
            ("name", check_dns_subdomain, parts[2]),
        ):
            try:
                check(value)
            except ValueError as error:
                return error_response(400, f"{field}: {error}")
        result = await self.plane.delete((kind, parts[1], parts[2]))
        lines = _findings([f.format() for f in result.findings])
        if not result.accepted:
            status = (
                404
                if result.findings and "no applied resource" in result.findings[0].message
                else 409
            )
            return error_response(status, "delete refused; nothing changed", findings=lines)
        return json_response({"deleted": [_ref(k) for k in result.deleted], "warnings": lines})

    def config_status(self) -> Response:
        config = self.plane.config
        return json_response(
            {
                "files": [str(p) for p in config.paths],
                "findings": _findings([f.format() for f in config.file_findings]),
                "snapshot": self.plane.snapshot.version,
            }
        )

    def ca(self, request: Request, step: str) -> Response:
        """The mesh CA's roots and rotation (:mod:`tulle.control.rotation`)."""
        rotation = self.plane.rotation
        if rotation is None:
            return error_response(503, "the CA is not started yet")
        leadership = self.plane.leadership
        if request.method == "POST" and step and not leadership.leading:
            holder = leadership.status().get("holder") or "none yet"
            return error_response(
                409,
                f"{_shown(step)} refused: this control-plane replica does not lead (the leader "
                f"is {holder}); the leader takes rotation steps and the others follow it "
                "through the CA's Secret: send it to the leader",
            )
        force = False
        if request.method == "POST" and request.body.strip():
            body = json_body(request.body, "CA step")
            force = isinstance(body, dict) and body.get("force") is True
        return rotation.respond(_shown(request.method), step, force)

    # --- registry -------------------------------------------------------------------------

    async def endpoints(self, request: Request, caller: Caller) -> Response:
        if request.method == "GET":
            require_admin(caller, f"GET {API}/endpoints")
            items = [{**e.to_dict(), "source": "api"} for e in self.plane.registry.endpoints()]
            body: dict[str, Any] = {"items": items}
            kube = self.plane.kube
            if kube is not None:  # --registry kubernetes: the cluster's, and how its watches do
                items += [{**e.to_dict(), "source": "kubernetes"} for e in kube.endpoints()]
                body["kubernetes"] = kube.status()
            return json_response(body)
        if request.method in ("POST", "DELETE"):
            body = json_body(request.body, "registration")
            if not caller.admin and isinstance(body, dict):
                body.setdefault("serviceAccount", caller.service_account)
            try:
                endpoint = endpoint_from_dict(body)
            except RegistrationError as error:
                return error_response(400, f"bad registration: {error}")
            if not caller.admin:
                self._check_owner(caller, endpoint, self.plane.registry.get(endpoint.id))
                if request.method == "POST":
                    self._check_entitled(caller, endpoint)
            if request.method == "POST":
                changed = await self.plane.register(endpoint)
                return json_response({"registered": endpoint.to_dict(), "changed": changed})
            if not await self.plane.deregister(endpoint.id):
                return error_response(404, f"no endpoint {endpoint.id}")
            return json_response({"deregistered": endpoint.id})
        return error_response(
            405, f"{_shown(request.method)} is not allowed; use GET, POST or DELETE"
        )

    @staticmethod
    def _check_owner(caller: Caller, endpoint: Endpoint, registered: Endpoint | None) -> None:
        """A workload registers only endpoints of its own identity, and never takes over (or
        removes) an endpoint another identity registered at the same address."""
        for candidate, what in ((endpoint, "this registration"), (registered, "the endpoint")):
            if candidate is None:
                continue
            namespace = candidate.namespace
            if (namespace, candidate.service_account) != (
                caller.namespace,
                caller.service_account,
            ):
                raise AccessDenied(
                    403,
                    f"{caller} may not change {endpoint.id}: {what} belongs to "
                    f"ns/{namespace}/sa/{candidate.service_account}",
                )

    def _check_entitled(self, caller: Caller, endpoint: Endpoint) -> None:
        """A workload serves only the services its Workload resources say it serves."""
        served = self.plane.services_of(caller.namespace, caller.service_account)
        if endpoint.service not in served:
            raise AccessDenied(
                403,
                f"{caller} may not register an endpoint of {endpoint.service}: no Workload of "
                f"namespace {caller.namespace} with serviceAccount {caller.service_account} "
                f"serves it (it serves: {', '.join(sorted(served)) or 'nothing'})",
            )

    # --- status ---------------------------------------------------------------------------

    def proxy_status(self) -> Response:
        nodes = []
        for connection in self.plane.connections.values():
            status = node_status(connection, self.plane.node_resources(connection.node))
            certificate = self.plane.secrets(connection.node)[:1]
            if certificate and "notAfter" in certificate[0]:
                status["certificate"] = {
                    key: certificate[0][key]
                    for key in ("identity", "serial", "notBefore", "notAfter")
                }
            nodes.append(status)
        nodes.sort(key=lambda n: (n["node"], n["connected_at"]))
        return json_response(
            {
                "snapshot": self.plane.snapshot.version,
                "pending": self.plane.push_pending,
                "nodes": nodes,
            }
        )

    def proxy_config(self, request: Request) -> Response:
        node_id = request.param("node")
        type_name = request.param("type", "listeners") or "listeners"
        type_url = BY_SHORT_NAME.get(type_name)
        if type_url is None:
            kinds = ", ".join(sorted(BY_SHORT_NAME))
            return error_response(400, f"unknown type {_shown(type_name)!r}; use {kinds}")
        matches = [c for c in self.plane.connections.values() if c.node.id == node_id]
        if not matches:
            known = sorted({c.node.id for c in self.plane.connections.values()})
            return error_response(
                404, f"no connected node {_shown(node_id or '')!r}", connected=known
            )
        if type_url == SECRET:  # no SDS is served: the node's certificate as the CA issued it
            resources = self.plane.secrets(matches[-1].node)
        else:
            # A node may have several streams (a proxyless app's grpcio, and its tulle agent's
            # for the trust bundle only): the latest one that subscribed to the type.
            subscribed = [c for c in matches if type_url in c.session.types] or matches
            resources = sent_config(subscribed[-1], type_url)
        return json_response({"node": node_id, "type": type_name, "resources": resources})


def _ref(key: tuple[str, str, str]) -> str:
    return f"{key[0]} {key[1]}/{key[2]}"


def resource_summary(data: dict[str, Any]) -> str:
    """``Kind namespace/name`` of resource data."""
    meta = data.get("metadata", {})
    return f"{data.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')}"
