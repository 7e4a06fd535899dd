"""The transparent outbound listener: a connection redirected by iptables is HTTP when the mesh
has routes for its original destination port (handled by the HTTP/1.1 front end and the engine),
and opaque TCP otherwise — to the mesh's TCP service on that port, or straight through to the
original destination. Unknown ports are never parsed, so server-speaks-first protocols work.
A TCP pipe to an endpoint in the mesh is mutual TLS (the endpoint's ``tls``, as for HTTP);
one that cannot be opened is closed, and why is logged (``upstream connect mTLS: ...``). Each
pipe is counted in the TCP metrics and has an access-log entry when it ends, as does a
connection closed because its service has no endpoint (:mod:`tulle.proxy.tcp_telemetry`).
On the inbound side an ``admit`` check (the port's network RBAC: AuthorizationPolicy on TCP)
judges each connection once, when it is made (after the mTLS handshake, so the peer's identity
is known), before anything reaches the app: a refused connection is closed unread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.connection_options import TcpKeepaliveSpec
from tulle.engine.errors import upstream_failure
from tulle.proxy.detecting import DetectingFront
from tulle.proxy.in_flight import InFlight
from tulle.proxy.tcp import TcpPipe
from tulle.proxy.tcp_telemetry import TcpTelemetry
from tulle.transport.connect import set_keepalive
from tulle.transport.interception import original_destination
from tulle.transport.mtls import MeshTls
from tulle.xds.types import TCP_PROXY_TYPE

log = logging.getLogger(__name__)

Destination = tuple[str, int]
# (kind, endpoint, service, cluster): ("http", None, "", ""), ("tcp", endpoint, service,
# cluster), ("refuse", None, service, cluster) (a service without endpoint) or ("refuse", None,
# "", "") (no destination)
Plan = tuple[str, EndpointSpec | None, str, str]
# Whether a connection (its transport, its original destination) may go on; one refused is
# closed (the check logs and counts why).
Admit = Callable[[asyncio.Transport, Destination | None], bool]


def tcp_clusters(listeners: Mapping[str, Any]) -> dict[int, str]:
    """Port → cluster of the mesh's TCP services (a port two services share is left out: with
    no service addresses the destination port cannot tell them apart)."""
    found: dict[int, set[str]] = {}
    for listener in listeners.values():
        if listener.bind_to_port.value or not listener.HasField("bind_to_port"):
            continue
        port = listener.address.socket_address.port_value
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url != TCP_PROXY_TYPE:
                    continue
                proxy = tcp_proxy_pb2.TcpProxy()
                network_filter.typed_config.Unpack(proxy)
                found.setdefault(port, set()).add(proxy.cluster)
    return {port: next(iter(names)) for port, names in found.items() if len(names) == 1}


class TransparentOutbound(asyncio.Protocol):
    """One redirected connection: HTTP through the engine, or a TCP pipe. A pipe counts as in
    progress until it closes, so a drain gives it the grace period: it has no requests to
    finish, so it runs on until either side closes it or the proxy exits."""

    def __init__(
        self,
        plan: Callable[[Destination | None], Plan],
        http: Callable[[], DetectingFront],
        mark: int | None,
        in_flight: InFlight,
        telemetry: TcpTelemetry | None = None,
        mtls: MeshTls | None = None,
        admit: Admit | None = None,
        listener: str = "outbound",
        keepalive: Callable[[str], TcpKeepaliveSpec | None] | None = None,
    ) -> None:
        """``keepalive``: a TCP cluster's tcpKeepalive (set on the pipe's upstream socket)."""
        self.keepalive = keepalive
        self.admit = admit
        self.telemetry = telemetry
        self.listener = listener
        self.mtls = mtls
        self.plan = plan
        self.make_http = http
        self.mark = mark
        self.in_flight = in_flight
        self.http: DetectingFront | None = None
        self.pipe: TcpPipe | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        downstream = cast(asyncio.Transport, transport)
        destination = original_destination(downstream.get_extra_info("socket"))
        if self.admit is not None and not self.admit(downstream, destination):
            downstream.close()
            return
        kind, target, service, cluster = self.plan(destination)
        if kind == "http":
            self.http = self.make_http()
            self.http.connection_made(downstream)
            return
        telemetry = self.telemetry
        if kind == "refuse" or target is None:
            if telemetry is not None and service:
                telemetry.no_endpoint(downstream, service, cluster)
            downstream.close()
            return
        closed = None
        if telemetry is not None:
            connection = telemetry.begin(self.listener, downstream, target, service, cluster)

            def closed(pipe: TcpPipe) -> None:
                telemetry.ended(connection, pipe.bytes_up, pipe.bytes_down, pipe.failure)

        pipe = self.pipe = TcpPipe(downstream, self.mark, closed)
        self.in_flight.opened(self)
        mtls, endpoint = self.mtls, target
        keepalive = self.keepalive(cluster) if self.keepalive is not None else None

        async def open_upstream() -> None:
            failure = await pipe.connect(endpoint, mtls)
            if failure is None and keepalive is not None:
                set_keepalive(pipe.upstream, keepalive)
            if failure is not None:
                why = upstream_failure(f"{failure.kind} {failure}", endpoint.key, service).reason
                log.warning("TCP connection closed: %s", why)
            elif telemetry is not None and pipe.upstream is not None:
                telemetry.connected(connection, pipe.upstream)

        task = asyncio.get_running_loop().create_task(open_upstream())
        self.in_flight.track(task)

    def drain(self) -> None:
        """Nothing to tell a TCP pipe: it runs on (see the class)."""

    def expire(self, now: float) -> None:
        """A TCP pipe has no timeout of its own: it ends when either side closes it."""

    def data_received(self, data: bytes) -> None:
        if self.http is not None:
            self.http.data_received(data)
        elif self.pipe is not None:
            self.pipe.forward("down", data)

    def eof_received(self) -> bool:
        if self.pipe is not None:
            self.pipe.half_close("down")
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.http is not None:
            self.http.connection_lost(exc)
        if self.pipe is not None:
            self.pipe.close()
            self.in_flight.closed(self)

    def pause_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.pause("down")

    def resume_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.resume("down")
