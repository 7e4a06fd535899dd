"""The control plane's HTTP API (port 15014): config (apply, get, delete), the service registry
(register, deregister), proxy status and config, health. JSON in and out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


class ApiHandler:
    """Routes requests to the control plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def __call__(self, request: Request) -> Response:
        path, method = request.path.rstrip("/") or "/", request.method
        if path == "/healthz" and method == "GET":
            return text_response("ok\n")
        if path == f"{API}/resources":
            if method == "GET":
                return self.get_resources(request)
            if method == "POST":
                return self.apply(request)
            return error_response(405, f"{method} is not allowed on {path}; use GET or POST")
        if path.startswith(f"{API}/resources/") and method == "DELETE":
            return self.delete_resource(path[len(f"{API}/resources/") :])
        if path == f"{API}/endpoints":
            return self.endpoints(request)
        if path == f"{API}/proxy-status" and method == "GET":
            return self.proxy_status()
        if path == f"{API}/proxy-config" and method == "GET":
            return self.proxy_config(request)
        if path == f"{API}/config-status" and method == "GET":
            return self.config_status()
        return error_response(404, f"no API at {method} {path}")

    # --- config ---------------------------------------------------------------------------

    def apply(self, request: Request) -> Response:
        filename = request.headers.get("x-tulle-filename", "<request>")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return error_response(400, f"{filename}: not UTF-8 text")
        result = self.plane.apply(text, filename)
        lines = [f.format() for f in result.findings]
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

    def get_resources(self, request: Request) -> Response:
        kind_text = request.param("kind")
        kind = canonical_kind(kind_text) if kind_text else None
        if kind_text and kind is None:
            return error_response(
                400, f"unknown kind {kind_text!r}; kinds: {', '.join(kind_names())}"
            )
        namespace, name = request.param("namespace"), request.param("name")
        items = []
        validation = self.plane.config.validation
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
                    "source": self.plane.config.source_of(key),
                    "resource": r.model_dump(mode="json", by_alias=True, exclude_none=True),
                }
            )
        if name and not items:
            return error_response(404, f"no {kind or 'resource'} {namespace or 'default'}/{name}")
        return json_response({"items": items})

    def delete_resource(self, rest: str) -> Response:
        parts = rest.split("/")
        if len(parts) != 3:
            return error_response(400, "use DELETE /api/v1/resources/KIND/NAMESPACE/NAME")
        kind = canonical_kind(parts[0])
        if kind is None:
            return error_response(
                400, f"unknown kind {parts[0]!r}; kinds: {', '.join(kind_names())}"
            )
        result = self.plane.delete((kind, parts[1], parts[2]))
        lines = [f.format() for f in result.findings]
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
                "findings": [f.format() for f in config.file_findings],
                "snapshot": self.plane.snapshot.version,
            }
        )

    # --- registry -------------------------------------------------------------------------

    def endpoints(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response({"items": [e.to_dict() for e in self.plane.registry.endpoints()]})
        if request.method in ("POST", "DELETE"):
            try:
                data = request.json()
                endpoint = endpoint_from_dict(data)
            except (ValueError, RegistrationError) as error:
                return error_response(400, f"bad registration: {error}")
            if request.method == "POST":
                changed = self.plane.register(endpoint)
                return json_response({"registered": endpoint.to_dict(), "changed": changed})
            if not self.plane.deregister(endpoint.id):
                return error_response(404, f"no endpoint {endpoint.id}")
            return json_response({"deregistered": endpoint.id})
        return error_response(405, f"{request.method} is not allowed; use GET, POST or DELETE")

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
                400, f"unknown type {type_name!r}; use {', '.join(sorted(BY_SHORT_NAME))}"
            )
        matches = [c for c in self.plane.ads.connections.values() if c.node.id == node_id]
        if not matches:
            known = sorted({c.node.id for c in self.plane.ads.connections.values()})
            return error_response(404, f"no connected node {node_id!r}", connected=known)
        return json_response(
            {"node": node_id, "type": type_name, "resources": sent_config(matches[-1], type_url)}
        )


def _ref(key: tuple[str, str, str]) -> str:
    return f"{key[0]} {key[1]}/{key[2]}"


def resource_summary(data: dict[str, Any]) -> str:
    """``Kind namespace/name`` of resource data."""
    meta = data.get("metadata", {})
    return f"{data.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')}"
