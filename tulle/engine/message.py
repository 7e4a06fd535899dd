"""Requests and responses as the engine sees them, whatever the front end (proxy or library)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from tulle.engine.errors import ERROR_HEADER, MeshError

Body = bytes | AsyncIterator[bytes]

# gRPC status codes for the mesh's own answers to gRPC calls.
_GRPC_FOR_HTTP = {400: 13, 403: 7, 404: 12, 429: 8, 503: 14, 504: 4}


@dataclass
class Request:
    """A request: header names lowercase; ``path`` includes the query string; ``body`` is
    buffered (so it can be retried)."""

    method: str
    path: str
    authority: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    source_ip: str = ""
    http2: bool = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lowercase)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def is_grpc(self) -> bool:
        """Whether this is a gRPC call."""
        content_type = self.header("content-type") or ""
        return content_type.startswith("application/grpc")


@dataclass
class Response:
    """A response: from upstream (``upstream`` set) or produced by the mesh (``flag`` and
    ``reason`` set). ``discard`` releases an upstream response that will not be used."""

    status: int
    headers: list[tuple[str, str]]
    body: Body = b""
    flag: str = "-"
    reason: str = ""
    upstream: str = ""
    upstream_workload: str = ""
    cluster: str = ""
    route: str = ""
    attempts: int = 0
    trailers: list[tuple[str, str]] = field(default_factory=list)
    discard: Callable[[], Awaitable[None]] | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lowercase)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def release(self) -> None:
        """Give the upstream connection back without reading the body."""
        if self.discard is not None:
            await self.discard()


def mesh_response(
    error: MeshError, grpc: bool = False, cluster: str = "", route: str = ""
) -> Response:
    """The response the mesh sends for ``error``: the reason in ``x-tulle-error`` and the body,
    or, for a gRPC call, as a trailers-only gRPC status."""
    if grpc:
        code = _GRPC_FOR_HTTP.get(error.status, 2)
        headers = [
            ("content-type", "application/grpc"),
            ("grpc-status", str(code)),
            ("grpc-message", error.reason),
            (ERROR_HEADER, error.reason),
        ]
        return Response(200, headers, b"", error.flag, error.reason, cluster=cluster, route=route)
    body = (error.reason + "\n").encode()
    headers = [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
        (ERROR_HEADER, error.reason),
    ]
    return Response(
        error.status, headers, body, error.flag, error.reason, cluster=cluster, route=route
    )


class UpstreamError(Exception):
    """No response from an endpoint: ``kind`` is ``connect``, ``reset``, ``refused-stream`` or
    ``timeout``; the message says what happened."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
