"""Talking to the control plane's HTTP API from the CLI, with one clear line on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tulle.local.state import StateDir, alive

DEFAULT_SERVER = "http://127.0.0.1:15014"

ServerOption = Annotated[
    str, typer.Option("--server", envvar="TULLE_SERVER", help="The control plane's HTTP API.")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` to stderr and return the exit to raise."""
    typer.echo(message, err=True)
    return typer.Exit(code)


def resolve_server(server: str) -> str:
    """``server``; when it is the default, the API of a mesh ``tulle up`` runs from ``./.tulle``
    (which may use other ports) if there is one."""
    if server != DEFAULT_SERVER:
        return server
    mesh = StateDir(Path(".tulle")).read()
    if mesh is not None and mesh.api and alive(mesh.runner_pid):
        return mesh.api
    return server


def call(server: str, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """``(status, json)`` of an API call; exits with a clear message when the server is away."""
    import httpx

    server = resolve_server(server)
    url = server.rstrip("/") + path
    try:
        response = httpx.request(method, url, timeout=30.0, **kwargs)
    except httpx.ConnectError as error:
        raise fail(
            f"error: cannot reach the control plane at {server}: {error} "
            "(is `tulle controlplane` running? set --server)"
        ) from None
    except httpx.HTTPError as error:
        raise fail(f"error: {method} {url} failed: {error}") from None
    try:
        data = response.json()
    except ValueError:
        raise fail(f"error: {url} answered {response.status_code} without JSON") from None
    return response.status_code, data


def report_error(status: int, data: dict[str, Any]) -> typer.Exit:
    """Print an API error (and its findings) and return the exit to raise."""
    typer.echo(f"error: {data.get('error', status)}", err=True)
    for line in data.get("findings", []):
        typer.echo(line, err=True)
    return typer.Exit(1)
