"""What the outbound stack decides before a request's first attempt, and the records it keeps
per request: the engine's config, a request's parts and plan (route, cluster, the request as it
goes upstream, the ring-hash key), a fault delay to wait first, a request admitted to its
cluster (``Call``), and the pure steps of planning (rewrites, redirects, the hash key, a gRPC
deadline, replaying a body)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from tulle.engine import errors
from tulle.engine.cluster import ClusterState
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.config import RouteEntry, RouteTable, WeightedCluster
from tulle.engine.message import Request, Response, mesh_response
from tulle.engine.tasks import Cancel, nothing_to_cancel

# The module's own name for it: compiled code reads a Final from a static, not from the
# module's globals dict (every request uses it).
_NOTHING_TO_CANCEL: Final = nothing_to_cancel


@dataclass(frozen=True)
class EngineConfig:
    """Compiled config the engine runs on; replaced whole on every update."""

    version: str = ""
    route_tables: Mapping[str, RouteTable] = field(default_factory=lambda: MappingProxyType({}))
    clusters: Mapping[str, ClusterSpec] = field(default_factory=lambda: MappingProxyType({}))
    endpoints: Mapping[str, tuple[EndpointSpec, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )


# The per-request records below are plain classes, not dataclasses: compiled, a dataclass's
# __init__ stays interpreted, at several times the cost.


class RequestParts:
    """A request's path, query string, headers (first value by lowercase name; built only when
    a route table reads them) and query."""

    __slots__ = ("headers", "path", "query", "query_string")

    def __init__(
        self, path: str, query_string: str, headers: dict[str, str], query: dict[str, list[str]]
    ) -> None:
        self.path, self.query_string, self.headers, self.query = path, query_string, headers, query


NO_HEADERS: Final[dict[str, str]] = {}
NO_QUERY: Final[dict[str, list[str]]] = {}


class Plan:
    """A request's way decided before its first attempt: the route, the weighted cluster
    chosen, the request as it goes upstream, and the hash key for ring-hash balancing."""

    __slots__ = ("chosen", "cluster", "key", "request", "route")

    def __init__(
        self,
        route: RouteEntry,
        chosen: WeightedCluster,
        cluster: ClusterState,
        request: Request,
        key: bytes | None,
    ) -> None:
        self.route, self.chosen, self.cluster, self.request, self.key = (
            route, chosen, cluster, request, key
        )  # fmt: skip


@dataclass(slots=True)
class Delayed:
    """A fault delay comes first; the rest is planned after it."""

    route: RouteEntry
    parts: RequestParts
    delay: float


class Call:
    """A request admitted to its cluster: attempts made so far, endpoints tried, and the loop
    time its timeout ends (None: no timeout): the route's, or the gRPC client's deadline
    (``grpc-timeout``) when that comes first (``grpc_deadline``)."""

    __slots__ = ("attempt", "deadline", "grpc_deadline", "plan", "timeout", "tried")

    def __init__(
        self, plan: Plan, deadline: float | None, timeout: float, grpc_deadline: bool
    ) -> None:
        self.plan, self.deadline, self.timeout = plan, deadline, timeout
        self.grpc_deadline = grpc_deadline
        self.attempt = 0
        self.tried: set[str] = set()


# grpc-timeout units (gRPC over HTTP/2: "1*8DIGIT unit")
GRPC_TIMEOUT_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def grpc_timeout(value: str | None) -> float | None:
    """The seconds a ``grpc-timeout`` header gives (None: absent, or not the protocol's form,
    which is then ignored, as gRPC servers do)."""
    if not value or len(value) > 9:
        return None
    scale = GRPC_TIMEOUT_UNITS.get(value[-1])
    digits = value[:-1]
    if scale is None or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits) * scale


class CancelRequest:
    """Cancels a request on the fast path, whatever it is doing: its first attempt, the
    coroutine it moved to, or (once answered) nothing."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: Cancel = _NOTHING_TO_CANCEL

    def __call__(self) -> None:
        current, self.current = self.current, _NOTHING_TO_CANCEL  # once
        current()


def rewind(request: Request) -> bool:
    """Make ``request`` sendable again: a body in memory is; a streamed one only when it has
    ended and was kept (small enough), and then it becomes bytes."""
    if isinstance(request.body, bytes):
        return True
    replay = request.body.replay()
    if replay is None:
        return False
    request.body = replay
    return True


def hash_key(
    route: RouteEntry, request: Request, headers: Mapping[str, str], query: Mapping[str, list[str]]
) -> bytes | None:
    spec = route.hash
    if spec is None:
        return None
    if spec.kind == "header":
        value = headers.get(spec.name)
    elif spec.kind == "query":
        values = query.get(spec.name)
        value = values[0] if values else None
    elif spec.kind == "cookie":
        value = None
        for part in (headers.get("cookie") or "").split(";"):
            name, _, content = part.strip().partition("=")
            if name == spec.name:
                value = content
                break
    else:
        value = request.source_ip or None
    return value.encode() if value is not None else None


def rewrite(route: RouteEntry, request: Request, path: str, query_string: str) -> Request:
    new_path = path
    if route.prefix_rewrite is not None and route.path.kind == "prefix":
        new_path = route.prefix_rewrite + path[len(route.path.value) :]
    elif route.regex_rewrite is not None:
        pattern, substitution = route.regex_rewrite
        new_path = pattern.sub(substitution, path)
    if query_string:
        new_path += "?" + query_string
    authority = route.host_rewrite or request.authority
    return Request(request.method, new_path, authority, request.headers, request.body,
                   request.source_ip, request.http2, request.interim)  # fmt: skip


WELL_KNOWN_PORTS = frozenset({("http", 80), ("https", 443)})


def redirect(route: RouteEntry, request: Request, path: str, query_string: str) -> Response:
    """The redirect's answer; a scheme's well-known port is left out of its Location (as the
    Gateway API's RequestRedirect asks)."""
    spec = route.redirect
    assert spec is not None
    scheme = spec.scheme or "http"
    host = spec.host or request.authority.split(":")[0]
    if spec.port:
        if (scheme, spec.port) not in WELL_KNOWN_PORTS:
            host = f"{host}:{spec.port}"
    elif not spec.host and ":" in request.authority:
        host = request.authority
    new_path = spec.path or path
    if spec.prefix is not None and route.path.kind == "prefix":
        new_path = spec.prefix + path[len(route.path.value) :]
    if query_string:
        new_path += "?" + query_string
    location = f"{scheme}://{host}{new_path}"
    return Response(
        spec.status, [("location", location), ("content-length", "0")], b"", route=route.name
    )


def grpc_abort(code: int) -> Response:
    return mesh_response(errors.fault_abort(503), grpc=True, grpc_code=code)
