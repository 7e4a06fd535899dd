"""``tulle proxy``: run a sidecar in the foreground until SIGTERM (drain) or /quitquitquit.

The options are parsed and checked here; then the process replaces itself (same PID, same
output) with ``python -m tulle.proxy``, which loads the data plane and nothing of the CLI."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from tulle.proxy.admin_guard import TOKEN_FILE_HELP
from tulle.proxy.settings import ProxySettings, SettingsError


def proxy(
    xds: Annotated[
        str, typer.Option("--xds", help="HOST:PORT of the control plane's xDS.")
    ] = "127.0.0.1:15010",
    node_id: Annotated[
        str, typer.Option("--node-id", help="sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local")
    ] = "",
    admin_port: Annotated[
        int,
        typer.Option(
            help="Admin listener port (loopback only: config dump, clusters, ready, stats; "
            "POST /drain and /quitquitquit need the admin token)."
        ),
    ] = 15000,
    admin_host: Annotated[
        str, typer.Option(help="Loopback address the admin listener binds.")
    ] = "127.0.0.1",
    admin_token_file: Annotated[
        str | None,
        typer.Option(
            help="File (0600) the sidecar writes its admin token to at start; send it as "
            f"'Authorization: Bearer <token>'. Default: {TOKEN_FILE_HELP}."
        ),
    ] = None,
    stats_port: Annotated[
        int | None,
        typer.Option(
            help="Read-only listener: GET /ready and /stats/prometheus only (Istio's 15020 and "
            "15021). Off unless given."
        ),
    ] = None,
    stats_host: Annotated[
        str, typer.Option(help="Address the stats listener binds (a pod's, for its probes).")
    ] = "127.0.0.1",
    health_port: Annotated[
        int | None,
        typer.Option(
            help="The kubelet's listener, read-only: GET /ready and GET "
            "/app-health/<container>/<probe> (the app's HTTP probes, performed on loopback; "
            "Istio's 15021 and /app-health). Off unless given."
        ),
    ] = None,
    health_host: Annotated[
        str, typer.Option(help="Address the health listener binds (a pod's, for the kubelet).")
    ] = "127.0.0.1",
    app_probers: Annotated[
        str,
        typer.Option(
            envvar="TULLE_APP_PROBERS",
            show_envvar=True,
            help="The app's original HTTP probes, JSON by health path (`tulle inject` writes "
            'them): {"/app-health/web/readyz": {"httpGet": {"path": "/healthz", "port": 8080}}}.',
        ),
    ] = "",
    http_proxy_port: Annotated[
        int | None, typer.Option(help="HTTP forward-proxy listener (apps set HTTP_PROXY).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the HTTP proxy listener binds.")] = "127.0.0.1",
    outbound_port: Annotated[
        int | None, typer.Option(help="Transparent outbound listener (iptables REDIRECT target).")
    ] = None,
    inbound_port: Annotated[int | None, typer.Option(help="Transparent inbound listener.")] = None,
    app_port: Annotated[
        int | None,
        typer.Option(help="The app's port for inbound traffic (default: the original one)."),
    ] = None,
    mark: Annotated[
        str, typer.Option(help="SO_MARK for the proxy's upstream connections, e.g. 0x539.")
    ] = "",
    drain_seconds: Annotated[
        float, typer.Option(help="Grace period for in-flight requests on SIGTERM.")
    ] = 5.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "warning",
    request_header_timeout: Annotated[
        float, typer.Option(help="Seconds a client may take to send a request's head (408).")
    ] = 10.0,
    idle_timeout: Annotated[
        float, typer.Option(help="Seconds a client connection may stay idle before it is closed.")
    ] = 60.0,
    xds_root_cert: Annotated[
        str | None,
        typer.Option(
            help="The mesh's trust bundle (the control plane's root-cert.pem): --xds is then "
            "its secure port, over TLS, and the CA issues this sidecar's certificate there."
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            help="This replica's token, with --xds-root-cert: a bootstrap token (0600), or on "
            "Kubernetes the service-account token the kubelet projects (may be 0644)."
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="The control plane's HTTP API (http://HOST:PORT): its trace store takes this "
            "sidecar's spans when the Mesh names no OTLP endpoint (with the --token-file "
            "token). Default: --xds's host, port 15014."
        ),
    ] = None,
) -> None:
    """Run the sidecar proxy: config over ADS, the app's traffic through the engine."""
    try:
        settings = ProxySettings(
            xds=xds, node_id=node_id, admin_port=admin_port, admin_host=admin_host,
            admin_token_file=os.path.abspath(admin_token_file) if admin_token_file else None,
            stats_port=stats_port, stats_host=stats_host,
            http_proxy_port=http_proxy_port, host=host, outbound_port=outbound_port,
            inbound_port=inbound_port, app_port=app_port, mark=_mark(mark),
            drain_seconds=drain_seconds, log_level=log_level,
            request_header_timeout=request_header_timeout, idle_timeout=idle_timeout,
            xds_root_cert=os.path.abspath(xds_root_cert) if xds_root_cert else None,
            token_file=os.path.abspath(token_file) if token_file else None, server=server,
            health_port=health_port, health_host=health_host, app_probers=app_probers,
        )  # fmt: skip
        settings.check()
    except SettingsError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.flush()
    sys.stderr.flush()
    python = sys.executable
    os.execv(python, [python, "-P", "-m", "tulle.proxy", settings.to_json()])


def _mark(text: str) -> int | None:
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        raise SettingsError(f"--mark: {text!r} is not a number (e.g. 0x539)") from None
