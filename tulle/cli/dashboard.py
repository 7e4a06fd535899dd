"""``tulle dashboard``: open the control plane's dashboard in a browser. With the admin token
(read as the other commands read it) it asks the API for a one-time login code and opens
``/dashboard/login?code=...``, where the control plane swaps the code for a session cookie; the
admin token itself never goes into a URL (docs/observability.md, "Logging in"). Without a
browser (or with ``--no-browser``) it prints the URL, good once within a minute."""

from __future__ import annotations

from typing import Annotated

import typer

from tulle.cli.client import (
    DEFAULT_SERVER,
    ServerOption,
    TokenOption,
    call,
    report_error,
    resolve_server,
)


def dashboard(
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open a browser (else print the URL).")
    ] = True,
) -> None:
    """Open the dashboard: the service graph, services, traces and config."""
    import webbrowser

    status, data = call(server, token, "POST", "/api/v1/dashboard/logins")
    if status != 200:
        raise report_error(status, data)
    url = resolve_server(server).rstrip("/") + data["path"]
    opened = False
    if browser:
        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
    if opened:
        typer.echo("tulle dashboard: opened in your browser (the link works once, for a minute)")
    else:
        typer.echo(f"open this within a minute (it works once): {url}")
