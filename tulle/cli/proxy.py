"""``tulle proxy``: run a sidecar in the foreground until SIGTERM (drain) or /quitquitquit."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Annotated

import typer
import uvloop

from tulle.proxy.app import Proxy
from tulle.xds.node import NodeIdError, parse_node_id


def proxy(
    xds: Annotated[
        str, typer.Option("--xds", help="HOST:PORT of the control plane's xDS.")
    ] = "127.0.0.1:15010",
    node_id: Annotated[
        str, typer.Option("--node-id", help="sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local")
    ] = "",
    admin_port: Annotated[int, typer.Option(help="Admin listener port.")] = 15000,
    admin_host: Annotated[
        str, typer.Option(help="Address the admin listener binds (localhost unless a pod's).")
    ] = "127.0.0.1",
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
) -> None:
    """Run the sidecar proxy: config over ADS, the app's traffic through the engine."""
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        parse_node_id(node_id)
    except NodeIdError as error:
        typer.echo(f"error: --node-id: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        proxy = Proxy(
            xds, node_id, admin_port, http_proxy_port, host,
            outbound_port=outbound_port, inbound_port=inbound_port, app_port=app_port,
            mark=int(mark, 0) if mark else None, admin_host=admin_host,
        )  # fmt: skip
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_run(proxy, drain_seconds))
    except OSError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


async def _run(proxy: Proxy, drain_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proxy.stopped.set)
    await proxy.start()
    ports = f"admin {proxy.admin_host}:{proxy.admin_port}"
    if proxy.outbound_port is not None:
        ports += f", outbound :{proxy.outbound_port}"
    if proxy.inbound_port is not None:
        ports += f", inbound :{proxy.inbound_port}"
    if proxy.http_proxy_port is not None:
        ports += f", http proxy {proxy.host}:{proxy.http_proxy_port}"
    print(f"tulle proxy: {ports}", file=sys.stderr, flush=True)
    await proxy.stopped.wait()
    await proxy.drain_and_stop(drain_seconds)
