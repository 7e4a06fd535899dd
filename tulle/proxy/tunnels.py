"""The sidecar's Upgrade (WebSocket) tunnels: the request goes upstream alone (outbound: to
where its route table says; inbound: to the app, once its port's policy admits it) and only the
upstream's 101 makes a tunnel, a TCP pipe that takes the upstream connection over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tulle.codec.http1 import response_head
from tulle.engine import errors
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.inbound import refusal
from tulle.engine.message import Request, Response, UpstreamError, mesh_response
from tulle.proxy.dispatch import Dispatch
from tulle.proxy.http_front import Tunneler
from tulle.proxy.recording import Destination
from tulle.proxy.tcp import TcpPipe
from tulle.transport.mtls import forward_client_cert


class Tunnels(Dispatch):
    """Opening Upgrade tunnels for the sidecar's listeners."""

    def tunneler(self, table_of: Callable[[Destination], str]) -> Tunneler:
        """Opens Upgrade (WebSocket) tunnels for a listener whose route table ``table_of``
        says: the request goes upstream alone, and only the upstream's 101 (passed on to the
        client here) makes a tunnel; any other answer is the request's response."""

        async def tunnel(
            request: Request, destination: Destination, downstream: asyncio.Transport
        ) -> TcpPipe | Response:
            target = self.engine.tunnel_target(table_of(destination), request)
            if isinstance(target, Response):
                return target
            upstream, endpoint, cluster = target
            state = self.engine.clusters.get(cluster)
            spec = state.spec if state is not None else ClusterSpec(cluster)
            return await self._upgrade(endpoint, spec, upstream, downstream)

        return tunnel

    async def inbound_tunnel(
        self, request: Request, destination: Destination, downstream: asyncio.Transport
    ) -> TcpPipe | Response:
        """An Upgrade request for the app (a WebSocket from another workload): the port's
        policy decides as for any request (principals from the mTLS handshake), then the app's
        101 makes the tunnel."""
        port = self._inbound_port(destination)
        policy = self.inbound.get(port)
        if policy is not None:
            refused = refusal(policy, request, port, self.engine.clock())
            if refused is not None:
                return mesh_response(refused)
        forward_client_cert(request, self.mtls.identity if self.mtls else None)
        endpoint = EndpointSpec("127.0.0.1", self.app_port or port)
        return await self._upgrade(endpoint, ClusterSpec(f"inbound|{port}||"), request, downstream)

    async def _upgrade(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        request: Request,
        downstream: asyncio.Transport,
    ) -> TcpPipe | Response:
        """The Upgrade request to ``endpoint`` on a fresh connection (mutual TLS to an endpoint
        in the mesh, as the pool connects): on its 101 the pipe that takes that connection
        over, TLS layer and all; else the answer."""
        try:
            answer = await self.pool.upgrade(endpoint, cluster, request)
        except UpstreamError as failure:
            reason = f"{failure.kind} {failure}"
            return mesh_response(errors.upstream_failure(reason, endpoint.key, cluster.name))
        if isinstance(answer, Response):
            answer.upstream, answer.cluster = endpoint.key, cluster.name
            return answer
        downstream.write(response_head(101, answer.head.headers, answer.head.reason))
        if answer.rest:
            downstream.write(answer.rest)
        pipe = TcpPipe(downstream, self.pool.mark)
        pipe.adopt(answer.transport)
        return pipe
