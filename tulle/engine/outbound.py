"""The outbound stack: route → fault → rate limit → retry (with budget) → timeout → circuit
breaker → load balancer → outlier detection → endpoint. The front end supplies ``send``, which
carries one attempt to one endpoint; everything else happens here, the same for sidecar and
library."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import parse_qs

from tulle.api.kinds.networking import GRPC_STATUS_NAMES
from tulle.engine import errors
from tulle.engine.cluster import ClusterState
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.config import RouteEntry, RouteTable, WeightedCluster
from tulle.engine.message import Request, Response, UpstreamError, mesh_response
from tulle.engine.ratelimit import TokenBucket

Sender = Callable[[EndpointSpec, ClusterSpec, Request], Awaitable[Response]]

_GRPC_NAMES = {
    "1": "cancelled", "4": "deadline-exceeded", "8": "resource-exhausted", "13": "internal",
    "14": "unavailable",
}  # fmt: skip


@dataclass(frozen=True)
class EngineConfig:
    """Compiled config the engine runs on; replaced whole on every update."""

    version: str = ""
    route_tables: Mapping[str, RouteTable] = field(default_factory=lambda: MappingProxyType({}))
    clusters: Mapping[str, ClusterSpec] = field(default_factory=lambda: MappingProxyType({}))
    endpoints: Mapping[str, tuple[EndpointSpec, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )


@dataclass
class _RequestParts:
    """A request's path, query string, headers (first value by lowercase name) and query."""

    path: str
    query_string: str
    headers: dict[str, str]
    query: dict[str, list[str]]


class Engine:
    """Runs requests through the outbound stack on the config in force when each started."""

    def __init__(
        self,
        send: Sender,
        clock: Callable[[], float] = time.monotonic,
        chance: random.Random | None = None,
    ) -> None:
        self.send = send
        self.clock = clock
        self.chance = chance or random.Random()
        self.config = EngineConfig()
        self.clusters: dict[str, ClusterState] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self._mirrors: set[asyncio.Task[None]] = set()

    def update(self, config: EngineConfig) -> None:
        """Swap in new config atomically; cluster state (breakers, ejections) carries over."""
        clusters: dict[str, ClusterState] = {}
        for name, spec in config.clusters.items():
            endpoints = spec.static_endpoints or config.endpoints.get(name, ())
            state = self.clusters.get(name)
            if state is None:
                state = ClusterState(spec, endpoints, self.chance)
            else:
                state.update(spec, endpoints)
            clusters[name] = state
        self.clusters = clusters
        self.config = config

    # --- the stack --------------------------------------------------------------------------

    def _match(self, table_name: str, request: Request) -> tuple[RouteEntry | None, _RequestParts]:
        """The route ``request`` takes in route table ``table_name`` (None: no route), and the
        request's parts the later layers use."""
        path, _, query_string = request.path.partition("?")
        parts = _RequestParts(path, query_string, {}, {})
        table = self.config.route_tables.get(table_name)
        if table is None:
            return None, parts
        parts.headers = dict(reversed(request.headers))
        if query_string:
            parts.query = parse_qs(query_string, keep_blank_values=True)
        return table.route(request.authority, path, parts.headers, parts.query), parts

    def _upstream(
        self, route: RouteEntry, request: Request, parts: _RequestParts
    ) -> tuple[WeightedCluster, ClusterState, Request] | WeightedCluster:
        """The cluster chosen by weight, and the request as it goes there (rewrites and header
        edits applied); only the choice when the proxy does not know that cluster (yet)."""
        chosen = route.pick_cluster(self.chance)
        cluster = self.clusters.get(chosen.name)
        if cluster is None:
            return chosen
        upstream = _rewrite(route, request, parts.path, parts.query_string)
        upstream.headers = chosen.request_edits.apply(route.request_edits.apply(upstream.headers))
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

    async def handle(self, table_name: str, request: Request) -> Response:
        """One request through the stack, using the route table ``table_name``."""
        route, parts = self._match(table_name, request)
        if route is None:
            return mesh_response(errors.no_route(request.authority, parts.path), request.is_grpc)
        if route.redirect is not None:
            return _redirect(route, request, parts.path, parts.query_string)
        produced = await self._fault_and_limit(route, request)
        if produced is not None:
            return produced
        target = self._upstream(route, request, parts)
        if isinstance(target, WeightedCluster):
            missing = errors.no_cluster(target.name)
            return mesh_response(missing, request.is_grpc, target.name, route.name)
        chosen, cluster, upstream = target
        for mirror in route.mirrors if upstream.replayable else ():
            if self.chance.random() < mirror.chance:
                self._mirror(mirror.cluster, upstream)
        key = _hash_key(route, request, parts.headers, parts.query)
        response = await self._attempts(route, cluster, upstream, key)
        response.route = route.name
        response.headers = chosen.response_edits.apply(route.response_edits.apply(response.headers))
        return response

    async def _fault_and_limit(self, route: RouteEntry, request: Request) -> Response | None:
        fault = route.fault
        if fault is not None:
            if fault.delay is not None and self.chance.random() < fault.delay_chance:
                await asyncio.sleep(fault.delay)
            if self.chance.random() < fault.abort_chance:
                if fault.abort_grpc is not None:
                    return _grpc_abort(fault.abort_grpc)
                return mesh_response(errors.fault_abort(fault.abort_status or 503), request.is_grpc)
        spec = route.rate_limit
        if spec is not None:
            bucket = self.buckets.get(spec.name)
            if bucket is None or bucket.spec != spec:
                bucket = self.buckets[spec.name] = TokenBucket(spec, self.clock())
            if not bucket.take(self.clock()):
                return mesh_response(errors.rate_limited(spec.name, spec.status), request.is_grpc)
        return None

    async def _attempts(
        self, route: RouteEntry, cluster: ClusterState, request: Request, key: bytes | None
    ) -> Response:
        refused = cluster.admit_request()
        if refused is not None:
            return mesh_response(refused, request.is_grpc, cluster.spec.name)
        cluster.counters.requests += 1
        try:
            if route.timeout:
                async with asyncio.timeout(route.timeout):
                    return await self._retry_loop(route, cluster, request, key)
            return await self._retry_loop(route, cluster, request, key)
        except TimeoutError:
            error = errors.request_timeout(route.timeout or 0, cluster.spec.name)
            return mesh_response(error, request.is_grpc, cluster.spec.name)
        finally:
            cluster.counters.requests -= 1

    async def _retry_loop(
        self, route: RouteEntry, cluster: ClusterState, request: Request, key: bytes | None
    ) -> Response:
        retry = route.retry
        allowed = 1 + (retry.attempts if retry else 0)
        name = cluster.spec.name
        attempt = 0
        tried: set[str] = set()
        while True:
            attempt += 1
            is_retry = attempt > 1
            endpoint = cluster.pick(
                key, self.clock(), frozenset(tried) if key is None else frozenset()
            )
            if endpoint is None:
                return mesh_response(errors.no_healthy_endpoint(name), request.is_grpc, name)
            # HTTP/1.1 holds a connection per request in flight; HTTP/2 multiplexes, so only
            # max_requests limits it.
            slot = not request.http2
            refused = await cluster.acquire_connection() if slot else None
            if refused is not None:
                return mesh_response(refused, request.is_grpc, name)
            if is_retry:
                cluster.counters.retries += 1
            tried.add(endpoint.key)
            cluster.active[endpoint.key] = cluster.active.get(endpoint.key, 0) + 1
            try:
                response = await self._one_attempt(
                    retry.per_try_timeout if retry else None, endpoint, cluster, request
                )
            except UpstreamError as failure:
                cluster.record(endpoint, None, self.clock())
                can_retry = (
                    retry is not None
                    and attempt < allowed
                    and retry.retries_error(failure.kind)
                    and _rewind(request)
                )
                if can_retry and cluster.admit_retry():
                    await asyncio.sleep(retry.backoff(attempt, self.chance))  # type: ignore[union-attr]
                    continue
                error = errors.upstream_failure(f"{failure.kind} {failure}", endpoint.key, name)
                produced = mesh_response(error, request.is_grpc, name)
                produced.upstream, produced.attempts = endpoint.key, attempt
                if attempt > 1:
                    produced.flag += ",URX"
                return produced
            finally:
                if slot:
                    cluster.release_connection()
                cluster.active[endpoint.key] -= 1
                if is_retry:
                    cluster.counters.retries -= 1
            cluster.record(endpoint, response.status, self.clock())
            response.upstream, response.cluster, response.attempts = endpoint.key, name, attempt
            response.upstream_workload = endpoint.workload
            status_text = response.header("grpc-status") or next(
                (v for k, v in response.trailers if k == "grpc-status"), ""
            )
            grpc_status = _GRPC_NAMES.get(status_text)
            if (
                retry is not None
                and attempt < allowed
                and retry.retries_status(response.status, grpc_status)
                and _rewind(request)
                and cluster.admit_retry()
            ):
                await response.release()
                await asyncio.sleep(retry.backoff(attempt, self.chance))
                continue
            if (
                attempt > 1
                and retry is not None
                and retry.retries_status(response.status, grpc_status)
            ):
                response.flag = "URX"
            return response

    async def _one_attempt(
        self, per_try: float | None, endpoint: EndpointSpec, cluster: ClusterState, request: Request
    ) -> Response:
        if per_try is None:
            return await self.send(endpoint, cluster.spec, request)
        try:
            async with asyncio.timeout(per_try):
                return await self.send(endpoint, cluster.spec, request)
        except TimeoutError:
            raise UpstreamError("timeout", f"per-try timeout {per_try:g}s") from None

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


def _rewind(request: Request) -> bool:
    """Make ``request`` sendable again: a body in memory is; a streamed one only when it has
    ended and was kept (small enough), and then it becomes bytes."""
    if isinstance(request.body, bytes):
        return True
    replay = request.body.replay()
    if replay is None:
        return False
    request.body = replay
    return True


def _hash_key(
    route: RouteEntry, request: Request, headers: Mapping[str, str], query: Mapping[str, list[str]]
) -> bytes | None:
    spec = route.hash
    if spec is None:
        return None
    if spec.kind == "header":
        value = headers.get(spec.name)
    elif spec.kind == "query":
        values = query.get(spec.name)
        value = values[0] if values else None
    elif spec.kind == "cookie":
        value = None
        for part in (headers.get("cookie") or "").split(";"):
            name, _, content = part.strip().partition("=")
            if name == spec.name:
                value = content
                break
    else:
        value = request.source_ip or None
    return value.encode() if value is not None else None


def _rewrite(route: RouteEntry, request: Request, path: str, query_string: str) -> Request:
    new_path = path
    if route.prefix_rewrite is not None and route.path.kind == "prefix":
        new_path = route.prefix_rewrite + path[len(route.path.value) :]
    elif route.regex_rewrite is not None:
        pattern, substitution = route.regex_rewrite
        new_path = pattern.sub(substitution, path)
    if query_string:
        new_path += "?" + query_string
    authority = route.host_rewrite or request.authority
    return Request(request.method, new_path, authority, list(request.headers), request.body,
                   request.source_ip, request.http2)  # fmt: skip


def _redirect(route: RouteEntry, request: Request, path: str, query_string: str) -> Response:
    spec = route.redirect
    assert spec is not None
    host = spec.host or request.authority.split(":")[0]
    if spec.port:
        host = f"{host}:{spec.port}"
    elif not spec.host and ":" in request.authority:
        host = request.authority
    new_path = spec.path or path
    if spec.prefix is not None and route.path.kind == "prefix":
        new_path = spec.prefix + path[len(route.path.value) :]
    if query_string:
        new_path += "?" + query_string
    location = f"{spec.scheme or 'http'}://{host}{new_path}"
    return Response(
        spec.status, [("location", location), ("content-length", "0")], b"", route=route.name
    )


def _grpc_abort(status_name: str) -> Response:
    code = GRPC_STATUS_NAMES.index(status_name) if status_name in GRPC_STATUS_NAMES else 2
    return mesh_response(errors.fault_abort(503), grpc=True, grpc_code=code)
