"""Where the sidecar sends each HTTP request: the HTTP forward proxy's through its route table,
a redirected outbound one through the route table of its destination port (or passed through
when the mesh has none), an inbound one to the app once its port's policy admits it."""

from __future__ import annotations

from typing import Final

from tulle.engine import errors
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.errors import MeshError
from tulle.engine.inbound import refusal
from tulle.engine.message import Request, Response, UpstreamError, mesh_response
from tulle.engine.tasks import Cancel, nothing_to_cancel
from tulle.obs.tracing import SERVER
from tulle.proxy.core import ProxyCore
from tulle.proxy.http_front import Done
from tulle.proxy.recording import Destination
from tulle.transport.mtls import forward_client_cert

HTTP_PROXY_ROUTES: Final = "http_proxy"
PASSTHROUGH: Final = "PassthroughCluster"

_Specs = tuple[EndpointSpec, ClusterSpec]
_DIRECT: Final[dict[tuple[str, tuple[str, int]], _Specs]] = {}
"""The endpoint and cluster of each (cluster, target) ``_direct`` sends to, made once: they are
frozen dataclasses, whose generated ``__init__`` stays interpreted in the compiled build (two
per request cost the inbound path ~4 % of its CPU). At most ``MAX_DIRECT`` (passthrough targets
are any address the app calls): past it, emptied and made again."""
MAX_DIRECT: Final = 256


def _direct_specs(cluster: str, target: tuple[str, int], known: ClusterSpec | None) -> _Specs:
    """``known``: the cluster's spec in the config (an inbound cluster's says which protocol
    the app speaks), if it has one."""
    key = (cluster, target)
    specs = _DIRECT.get(key)
    if specs is None or (known is not None and specs[1] is not known):
        if len(_DIRECT) >= MAX_DIRECT:
            _DIRECT.clear()
        spec = known or ClusterSpec(cluster)
        specs = _DIRECT[key] = (EndpointSpec(target[0], target[1]), spec)
    return specs


class Dispatch(ProxyCore):
    """The sidecar's per-request dispatch, for the front ends."""

    def dispatch_http_proxy(self, request: Request, destination: Destination, done: Done) -> Cancel:
        """A request from the app through the HTTP forward proxy."""
        return self.engine.dispatch(HTTP_PROXY_ROUTES, request, done)

    def dispatch_outbound(self, request: Request, destination: Destination, done: Done) -> Cancel:
        """A request the app sent to ``destination``, redirected here by iptables: routed by
        the route table of the destination port, or passed through when the mesh has none."""
        table = str(destination[1]) if destination else ""
        if table in self.engine.config.route_tables:
            return self.engine.dispatch(table, request, done)
        if destination is not None:
            return self._direct(PASSTHROUGH, destination, request, done)
        reason = "no original destination (the connection was not redirected)"
        done(mesh_response(MeshError(400, "NR", reason)))
        return nothing_to_cancel

    def dispatch_inbound(self, request: Request, destination: Destination, done: Done) -> Cancel:
        """A request for the local app, redirected here by iptables."""
        tracer = self.engine.tracer
        if tracer is not None:  # the server span, when sampled; the app gets its context
            span = request.span = tracer.start(request.headers, SERVER)
            if span is not None:
                request.headers = span.inject(request.headers)
        port = self._inbound_port(destination)
        policy = self.inbound.get(port)
        if policy is not None:
            refused = refusal(policy, request, port, self.engine.clock())
            if refused is not None:
                done(mesh_response(refused, request.is_grpc))
                return nothing_to_cancel
        forward_client_cert(request, self.mtls.identity if self.mtls else None)
        target = ("127.0.0.1", self.app_port or port)
        return self._direct(f"inbound|{port}||", target, request, done)

    def _direct(
        self, cluster: str, target: tuple[str, int], request: Request, done: Done
    ) -> Cancel:
        """One attempt to ``target``, outside the engine (no routes: inbound, passthrough)."""
        endpoint, spec = _direct_specs(cluster, target, self.engine.config.clusters.get(cluster))

        def answer(outcome: Response | UpstreamError) -> None:
            if isinstance(outcome, UpstreamError):
                error = errors.upstream_failure(f"{outcome.kind} {outcome}", endpoint.key, cluster)
                done(mesh_response(error, request.is_grpc, cluster))
                return
            outcome.upstream, outcome.cluster, outcome.attempts = endpoint.key, cluster, 1
            done(outcome)

        return self.pool.submit(endpoint, spec, request, answer)
