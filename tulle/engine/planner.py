"""Planning, the first half of the outbound stack: route → CORS → redirect → fault → rate
limit → the weighted cluster and its upstream request (rewrites, header edits, the client span's
context), mirrors, and a route's fallback. Everything here is decided before the first attempt,
the same for sidecar and library; :class:`tulle.engine.outbound.Engine` carries the plan out
(admission, attempts, retries, timeouts)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from tulle.engine import errors
from tulle.engine.attempt_steps import (
    Outcome,
    trace_fallback,
)
from tulle.engine.cluster import ClusterState
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.config import RouteEntry, WeightedCluster
from tulle.engine.message import Request, Response, UpstreamError, mesh_response
from tulle.engine.plan import (
    NO_HEADERS,
    NO_QUERY,
    Delayed,
    EngineConfig,
    Plan,
    RequestParts,
    grpc_abort,
    hash_key,
    redirect,
    rewrite,
)
from tulle.engine.ratelimit import TokenBucket
from tulle.obs.metrics import SOURCE_WORKLOAD_HEADER
from tulle.obs.tap import Tap
from tulle.obs.tracing import CLIENT, Tracer

Sender = Callable[[EndpointSpec, ClusterSpec, Request], Awaitable[Response]]
# ``send`` with a callback: the outcome comes to the callback later (never before the starter
# returns). Returns the function that abandons the attempt (no callback follows).
Starter = Callable[
    [EndpointSpec, ClusterSpec, Request, Callable[[Outcome], None]], Callable[[], None]
]


class Planner:
    """The outbound stack's config and state (route tables, clusters with their breakers and
    ejections, rate-limit buckets) and what it decides per request before any attempt."""

    def __init__(
        self,
        send: Sender,
        clock: Callable[[], float] = time.monotonic,
        chance: random.Random | None = None,
        start: Starter | None = None,
        source_workload: str = "",
        tap: Tap | None = None,
    ) -> None:
        self.send = send
        self.tap = tap if tap is not None else Tap()  # `tulle tap`: the attempts it retries
        # Who is calling, for the callee's inbound metrics (sent with every routed request).
        self.identity = (SOURCE_WORKLOAD_HEADER, source_workload) if source_workload else None
        self.start = start
        self.clock = clock
        self.chance = chance or random.Random()
        self.config = EngineConfig()
        self.clusters: dict[str, ClusterState] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self._mirrors: set[asyncio.Task[None]] = set()
        self.tracer: Tracer | None = None  # tracing on (tulle.engine.trace_setup)

    def update(self, config: EngineConfig) -> None:
        """Swap in new config atomically; cluster state (breakers, ejections) carries over."""
        clusters: dict[str, ClusterState] = {}
        for name, spec in config.clusters.items():
            endpoints = spec.static_endpoints or config.endpoints.get(name, ())
            state = self.clusters.get(name)
            if state is None:
                state = ClusterState(spec, endpoints, self.chance, self.clock())
            else:
                state.update(spec, endpoints, self.clock())
            clusters[name] = state
        self.clusters = clusters
        self.config = config

    # --- the stack --------------------------------------------------------------------------

    def _match(self, table_name: str, request: Request) -> tuple[RouteEntry | None, RequestParts]:
        """The route ``request`` takes in route table ``table_name`` (None: no route), and the
        request's parts the later layers use."""
        path, _, query_string = request.path.partition("?")
        table = self.config.route_tables.get(table_name)
        headers = (
            dict(reversed(request.headers))
            if table is not None and table.reads_headers
            else NO_HEADERS
        )
        query = parse_qs(query_string, keep_blank_values=True) if query_string else NO_QUERY
        parts = RequestParts(path, query_string, headers, query)
        if table is None:
            return None, parts
        return table.route(request.authority, path, headers, query), parts

    def _upstream(
        self, route: RouteEntry, request: Request, parts: RequestParts
    ) -> tuple[WeightedCluster, ClusterState, Request] | WeightedCluster:
        """The cluster chosen by weight, and the request as it goes there (rewrites and header
        edits applied, the caller's workload named); only the choice when the proxy does not
        know that cluster (yet)."""
        chosen = route.pick_cluster(self.chance)
        cluster = self.clusters.get(chosen.name)
        if cluster is None:
            return chosen
        upstream = rewrite(route, request, parts.path, parts.query_string)
        headers = request.headers
        if self.identity is not None:  # a copy without any the app passed on, then ours
            headers = [h for h in headers if h[0] != SOURCE_WORKLOAD_HEADER]
            headers.append(self.identity)
        else:
            headers = list(headers)
        upstream.headers = chosen.request_edits.apply(route.request_edits.apply(headers))
        span = request.span
        if span is not None:  # the client span's context for the next hop (or "not sampled")
            upstream.headers = span.inject(upstream.headers)
            if span.sampled:
                upstream.span = span
        return chosen, cluster, upstream

    def tunnel_target(
        self, table_name: str, request: Request
    ) -> tuple[Request, EndpointSpec, str] | Response:
        """Where to open a tunnel for an Upgrade request (WebSocket and the like): the request
        as it should go upstream, the endpoint and the cluster; or the mesh's answer. Routing,
        rewrites, header edits and load balancing apply; retries and timeouts do not."""
        route, parts = self._match(table_name, request)
        if route is None or route.redirect is not None:
            return mesh_response(errors.no_route(request.authority, parts.path))
        target = self._upstream(route, request, parts)
        if isinstance(target, WeightedCluster):
            return mesh_response(errors.no_cluster(target.name))
        chosen, cluster, upstream = target
        endpoint = cluster.pick(None, self.clock())
        if endpoint is None:
            return mesh_response(errors.no_healthy_endpoint(chosen.name))
        return upstream, endpoint, chosen.name

    # --- planning: everything decided before the first attempt ------------------------------

    def plan(self, table_name: str, request: Request) -> Plan | Delayed | Response:
        """What happens to ``request`` (route table ``table_name``): the mesh's own answer (no
        route, redirect, fault abort, rate limit), a fault delay first, or the attempts."""
        tracer = self.tracer
        if tracer is not None:  # the client span, when sampled (tulle.obs.tracing)
            request.span = tracer.start(request.headers, CLIENT)
        route, parts = self._match(table_name, request)
        if route is None:
            return mesh_response(errors.no_route(request.authority, parts.path), request.is_grpc)
        if route.cors is not None:
            return self._plan_cors(route, request, parts)
        if route.redirect is not None:
            return redirect(route, request, parts.path, parts.query_string)
        fault = route.fault
        if (
            fault is not None
            and fault.delay is not None
            and self.chance.random() < fault.delay_chance
        ):
            return Delayed(route, parts, fault.delay)
        return self._plan_route(route, request, parts)

    def _plan_cors(
        self, route: RouteEntry, request: Request, parts: RequestParts
    ) -> Plan | Delayed | Response:
        """``plan`` for a route with CORS (Envoy's CORS filter comes before the fault filter
        and the router): a preflight is answered here; the mesh's own answers get the CORS
        headers now, upstream ones in ``_finish``."""
        cors = route.cors
        assert cors is not None
        answer = cors.preflight(request)
        if answer is not None:
            answer.route = route.name
            return answer
        fault = route.fault
        planned: Plan | Delayed | Response
        if route.redirect is not None:
            planned = redirect(route, request, parts.path, parts.query_string)
        elif (
            fault is not None
            and fault.delay is not None
            and self.chance.random() < fault.delay_chance
        ):
            return Delayed(route, parts, fault.delay)
        else:
            planned = self._plan_route(route, request, parts)
        if isinstance(planned, Response):
            cors.decorate(request, planned)
        return planned

    def _plan_route(
        self, route: RouteEntry, request: Request, parts: RequestParts
    ) -> Plan | Response:
        fault = route.fault
        if fault is not None and self.chance.random() < fault.abort_chance:
            if fault.abort_grpc is not None:
                return grpc_abort(fault.abort_grpc)
            return mesh_response(errors.fault_abort(fault.abort_status or 503), request.is_grpc)
        spec = route.rate_limit
        if spec is not None:
            bucket = self.buckets.get(spec.name)
            if bucket is None or bucket.spec != spec:
                bucket = self.buckets[spec.name] = TokenBucket(spec, self.clock())
            if not bucket.take(self.clock()):
                return mesh_response(errors.rate_limited(spec.name, spec.status), request.is_grpc)
        target = self._upstream(route, request, parts)
        if isinstance(target, WeightedCluster):
            missing = errors.no_cluster(target.name)
            return mesh_response(missing, request.is_grpc, target.name, route.name)
        chosen, cluster, upstream = target
        if route.mirrors and upstream.replayable:
            for mirror in route.mirrors:
                if self.chance.random() < mirror.chance:
                    self._mirror(mirror.cluster, upstream)
        key = hash_key(route, request, parts.headers, parts.query)
        return Plan(route, chosen, cluster, upstream, key)

    def _finish(self, plan: Plan, response: Response) -> Response:
        route = plan.route
        response.route = route.name
        edits = route.response_edits
        response.headers = plan.chosen.response_edits.apply(edits.apply(response.headers))
        if route.cors is not None:
            route.cors.decorate(plan.request, response)
        return response

    def _fallback_for(self, plan: Plan, response: Response) -> Plan | None:
        """The plan that sends a failed request once to its route's fallback cluster, or None
        (no fallback, the answer is not a failure it catches, or the body cannot be replayed)."""
        spec = plan.route.fallback
        if spec is None or not spec.catches(response.status, response.flag):
            return None
        cluster = self.clusters.get(spec.cluster)
        if cluster is None or not plan.request.replayable:
            return None
        chosen = WeightedCluster(spec.cluster, 1)
        route = dataclasses.replace(plan.route, clusters=(chosen,), fallback=None, mirrors=())
        span = plan.request.span
        if span is not None:
            trace_fallback(span, spec.cluster, response)
        return Plan(route, chosen, cluster, plan.request, plan.key)

    def _mirror(self, cluster_name: str, request: Request) -> None:
        cluster = self.clusters.get(cluster_name)
        if cluster is None:
            return
        copy = Request(
            request.method, request.path, request.authority + "-shadow", list(request.headers),
            request.body, request.source_ip, request.http2,
        )  # fmt: skip

        async def fire() -> None:
            endpoint = cluster.pick(None, self.clock())
            if endpoint is None:
                return
            try:
                response = await self.send(endpoint, cluster.spec, copy)
                await response.release()
            except (UpstreamError, OSError):
                return

        task = asyncio.get_running_loop().create_task(fire())
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)
