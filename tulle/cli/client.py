"""Talking to the control plane's HTTP API from the CLI, with one clear line on failure: on
this machine (``--server``, :class:`LocalApi`), or in a cluster through the API server
(``--kube``, :mod:`tulle.cli.cluster`); commands take an :class:`Api` and do not care which."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Protocol

import typer

from tulle.local.state import StateDir, alive

DEFAULT_SERVER = "http://127.0.0.1:15014"

ServerOption = Annotated[
    str, typer.Option("--server", envvar="TULLE_SERVER", help="The control plane's HTTP API.")
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TULLE_TOKEN",
        help="The control plane's admin token (default: read from its state directory, "
        ".tulle/controlplane/admin-token under `tulle up`, .tulle/admin-token otherwise).",
    ),
]
ADMIN_TOKEN_FILE = "admin-token"


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


def token_places() -> list[Path]:
    """Where the CLI looks for the admin token: the control plane's state directory under
    ``tulle up`` (``.tulle/controlplane``), then ``tulle controlplane``'s default (``.tulle``)."""
    state = StateDir(Path(".tulle"))
    return [state.control_plane / ADMIN_TOKEN_FILE, state.root / ADMIN_TOKEN_FILE]


def resolve_token(token: str | None) -> str | None:
    """``token`` (``--token`` or ``TULLE_TOKEN``); else the admin token found in
    :func:`token_places`; None when there is none (the API then says what it needs)."""
    if token:
        return token.strip()
    for place in token_places():
        try:
            return place.read_text().strip()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise fail(f"error: cannot read the admin token {place}: {error}") from None
    return None


def call(
    server: str, token: str | None, method: str, path: str, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    """``(status, json)`` of an API call; exits with a clear message when the server is away."""
    import httpx

    server = resolve_server(server)
    url = server.rstrip("/") + path
    headers = dict(kwargs.pop("headers", {}))
    credential = resolve_token(token)
    if credential:
        headers["authorization"] = f"Bearer {credential}"
    try:
        response = httpx.request(method, url, timeout=30.0, headers=headers, **kwargs)
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
    if response.status_code == 401 and not credential:
        places = " and ".join(map(str, token_places()))
        data["error"] = (
            f"{data.get('error', 'unauthenticated')} (no admin token found: looked for {places}; "
            "pass --token or set TULLE_TOKEN)"
        )
    return response.status_code, data


def report_error(status: int, data: dict[str, Any]) -> typer.Exit:
    """Print an API error (and its findings) and return the exit to raise."""
    typer.echo(f"error: {data.get('error', status)}", err=True)
    for line in data.get("findings", []):
        typer.echo(line, err=True)
    return typer.Exit(1)


class Api(Protocol):
    """The control plane's HTTP API, wherever it is."""

    where: str

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """``(status, json)`` of an authenticated call; exits saying why when it cannot."""
        ...

    def text(self, path: str) -> str:
        """An unauthenticated page (``/metrics``); exits saying why when it cannot."""
        ...

    def close(self) -> None:
        """Close its connections."""
        ...


class LocalApi:
    """The API at ``server`` (or the one ``tulle up`` runs), with ``token`` or the admin token
    of the local state directory."""

    def __init__(self, server: str, token: str | None) -> None:
        self.server = server
        self.token = token
        self.where = resolve_server(server)

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """See :class:`Api`."""
        return call(self.server, self.token, method, path, **kwargs)

    def text(self, path: str) -> str:
        """See :class:`Api`."""
        import httpx

        url = self.where.rstrip("/") + path
        try:
            response = httpx.get(url, timeout=30.0)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise fail(f"error: cannot read {url}: {error}") from None
        return response.text

    def close(self) -> None:
        """See :class:`Api` (each call has its own connection)."""
