"""Running a sidecar in the foreground until SIGTERM (drain) or /quitquitquit."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

import uvloop

from tulle.proxy.app import Proxy
from tulle.proxy.health import HealthHandler, parse_probers
from tulle.proxy.limits import FrontLimits
from tulle.proxy.settings import ProxySettings
from tulle.transport.http_server import listening_port, serve_http


def run_proxy(settings: ProxySettings) -> int:
    """Serve until stopped; the exit status (1 when a listener cannot be opened, said why)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        proxy = Proxy(
            settings.xds, settings.node_id, settings.admin_port, settings.http_proxy_port,
            settings.host, outbound_port=settings.outbound_port,
            inbound_port=settings.inbound_port, app_port=settings.app_port, mark=settings.mark,
            admin_host=settings.admin_host, stats_port=settings.stats_port,
            stats_host=settings.stats_host, admin_token_file=settings.admin_token_file,
            xds_root_cert=settings.xds_root_cert, token_file=settings.token_file,
            server=settings.server,
            limits=FrontLimits(
                header_timeout=settings.request_header_timeout,
                idle_timeout=settings.idle_timeout,
            ),
        )  # fmt: skip
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(proxy, settings))
    except OSError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


async def _serve(proxy: Proxy, settings: ProxySettings) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proxy.stopped.set)
    await proxy.start()
    health_port = settings.health_port
    if health_port is not None:
        # The kubelet's listener: the sidecar's readiness and the app's probes (not a traffic
        # listener: open until the end, as the admin and stats ones).
        probes = parse_probers(settings.app_probers)
        health = await serve_http(
            HealthHandler(proxy.readiness, probes), settings.health_host, health_port
        )
        health_port = listening_port(health)
        proxy.listeners.append(health)
    # Everything made so far (modules, classes, the protobuf descriptors: most of the heap)
    # lives as long as the process: frozen, the cyclic collector no longer walks it on every
    # full collection, which under load came every ~30,000 requests and took tens of ms.
    gc.collect()
    gc.freeze()
    ports = f"admin {proxy.admin_host}:{proxy.admin_port}"
    if proxy.stats_port is not None:
        ports += f", stats {proxy.stats_host}:{proxy.stats_port}"
    if health_port is not None:
        ports += f", health {settings.health_host}:{health_port}"
    if proxy.outbound_port is not None:
        ports += f", outbound :{proxy.outbound_port}"
    if proxy.inbound_port is not None:
        ports += f", inbound :{proxy.inbound_port}"
    if proxy.http_proxy_port is not None:
        ports += f", http proxy {proxy.host}:{proxy.http_proxy_port}"
    print(f"tulle proxy: {ports}", file=sys.stderr, flush=True)
    # Where the token is, never the token: POST /drain and /quitquitquit need it.
    print(f"tulle proxy: admin token file {proxy.admin_guard.token_file}", file=sys.stderr,
          flush=True)  # fmt: skip
    await proxy.stopped.wait()
    await proxy.drain_and_stop(settings.drain_seconds)
