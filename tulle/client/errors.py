"""The one exception type of library mode: a request the mesh itself failed."""

from __future__ import annotations

import httpx


class MeshError(httpx.TransportError):
    """A request the mesh failed itself — no route, circuit open, no healthy endpoint, upstream
    failure, timeout, rate limit, fault abort, denied. ``reason`` is the string a sidecar puts in
    ``x-tulle-error``; ``status`` the status a sidecar would have answered with; ``flag``
    Envoy's response flag. A subclass of httpx.TransportError, which httpx users already catch
    (as httpx.HTTPError or httpx.RequestError)."""

    def __init__(
        self, reason: str, status: int, flag: str, request: httpx.Request | None = None
    ) -> None:
        super().__init__(reason, request=request)
        self.reason = reason
        self.status = status
        self.flag = flag


class MeshNotReadyError(MeshError):
    """No config has come from the control plane yet (within the ready timeout)."""

    def __init__(self, reason: str, request: httpx.Request | None = None) -> None:
        super().__init__(reason, 503, "NC", request)
