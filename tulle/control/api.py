"""The control plane's HTTP API (port 15014): config (apply, get, delete), the service registry
(register, deregister), proxy status and config, health. JSON in and out.

What it refuses before any work is done, and why, is in docs/control-plane.md ("What the API
refuses"): bodies past a size (413), text that is not UTF-8, JSON nested too deeply, names that
are not DNS labels, more applies than :data:`MAX_WAITING_APPLIES` at once (429)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tulle.api.names import check_dns_label, check_dns_subdomain
from tulle.control.bodies import MAX_APPLY_BYTES, BodyError, check_size, json_body, utf8_text
from tulle.control.config import APPLIED
from tulle.control.kinds import canonical_kind, kind_names
from tulle.control.registry import RegistrationError, endpoint_from_dict
from tulle.control.status import node_status, sent_config
from tulle.transport.http_server import (
    Request,
    Response,
    error_response,
    json_response,
    text_response,
)
from tulle.xds.types import BY_SHORT_NAME

if TYPE_CHECKING:
    from tulle.control.app import ControlPlane

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


class ApiHandler:
    """Routes requests to the control plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except BodyError as error:
            return error_response(error.status, str(error))

    async def _route(self, request: Request) -> Response:
        path, method = request.path.rstrip("/") or "/", request.method
        if path == "/healthz" and method == "GET":
            return text_response("ok\n")
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
        if path == f"{API}/endpoints":
            return await self.endpoints(request)
        if path == f"{API}/proxy-status" and method == "GET":
            return self.proxy_status()
        if path == f"{API}/proxy-config" and method == "GET":
            return self.proxy_config(request)
        if path == f"{API}/config-status" and method == "GET":
            return self.config_status()
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

    # --- registry -------------------------------------------------------------------------

    async def endpoints(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response({"items": [e.to_dict() for e in self.plane.registry.endpoints()]})
        if request.method in ("POST", "DELETE"):
            try:
                endpoint = endpoint_from_dict(json_body(request.body, "registration"))
            except RegistrationError as error:
                return error_response(400, f"bad registration: {error}")
            if request.method == "POST":
                changed = await self.plane.register(endpoint)
                return json_response({"registered": endpoint.to_dict(), "changed": changed})
            if not await self.plane.deregister(endpoint.id):
                return error_response(404, f"no endpoint {endpoint.id}")
            return json_response({"deregistered": endpoint.id})
        return error_response(
            405, f"{_shown(request.method)} is not allowed; use GET, POST or DELETE"
        )

    # --- status ---------------------------------------------------------------------------

    def proxy_status(self) -> Response:
        nodes = [
            node_status(c, self.plane.node_resources(c.node))
            for c in self.plane.ads.connections.values()
        ]
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
            return error_response(
                400,
                f"unknown type {_shown(type_name)!r}; use {', '.join(sorted(BY_SHORT_NAME))}",
            )
        matches = [c for c in self.plane.ads.connections.values() if c.node.id == node_id]
        if not matches:
            known = sorted({c.node.id for c in self.plane.ads.connections.values()})
            return error_response(
                404, f"no connected node {_shown(node_id or '')!r}", connected=known
            )
        return json_response(
            {"node": node_id, "type": type_name, "resources": sent_config(matches[-1], type_url)}
        )


def _ref(key: tuple[str, str, str]) -> str:
    return f"{key[0]} {key[1]}/{key[2]}"


def resource_summary(data: dict[str, Any]) -> str:
    """``Kind namespace/name`` of resource data."""
    meta = data.get("metadata", {})
    return f"{data.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')}"
