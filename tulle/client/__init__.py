"""Library mode: the mesh inside the application's process, with no extra hop. An httpx
transport (sync and async) runs requests through the same engine as the sidecar, on config from
the same control plane (node mode ``library``); ASGI and WSGI middleware apply inbound policy.

    import tulle.client
    async with tulle.client.AsyncClient() as client:   # TULLE_XDS_ADDRESS, TULLE_NODE_ID
        await tulle.client.ready()
        response = await client.get("http://catalog:8080/items")

A request the mesh fails raises :class:`MeshError` (an ``httpx.TransportError``) whose
``reason`` is what a sidecar would put in ``x-tulle-error``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from tulle.client.errors import MeshError, MeshNotReadyError
from tulle.client.runtime import MeshRuntime, configure, get_runtime, shutdown
from tulle.client.settings import Settings, SettingsError
from tulle.client.transport import AsyncMeshTransport, MeshTransport

__all__ = [
    "AsyncClient", "AsyncMeshTransport", "Client", "MeshError", "MeshNotReadyError",
    "MeshRuntime", "MeshTransport", "Settings", "SettingsError", "configure", "get_runtime",
    "metrics_registry", "ready", "shutdown", "wait_ready",
]  # fmt: skip


class Client(httpx.Client):
    """An httpx.Client whose requests go through the mesh."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(transport=MeshTransport(), **kwargs)


class AsyncClient(httpx.AsyncClient):
    """An httpx.AsyncClient whose requests go through the mesh."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(transport=AsyncMeshTransport(), **kwargs)


def wait_ready(timeout: float | None = None) -> None:
    """Block until config has come from the control plane; MeshNotReadyError after
    ``timeout`` seconds (default: the ready timeout setting)."""
    runtime = get_runtime()
    waited = runtime.settings.ready_timeout if timeout is None else timeout
    if not runtime.wait_ready(waited):
        raise MeshNotReadyError(runtime.not_ready_reason(waited))


async def ready(timeout: float | None = None) -> None:
    """``wait_ready`` without blocking the event loop."""
    await asyncio.to_thread(wait_ready, timeout)


def metrics_registry() -> CollectorRegistry:
    """The registry with the library's metrics (same names and labels as a sidecar's), for an
    app that serves its own /metrics."""
    return get_runtime().metrics.registry
