"""The outbound stack: route → fault → rate limit → retry (with budget) → timeout → circuit
breaker → load balancer → outlier detection → endpoint. The front end supplies ``send``, which
carries one attempt to one endpoint (and, for speed, ``start``, the same with a callback);
everything else happens here, the same for sidecar and library.

Two paths share every decision: ``handle`` runs a request as coroutines; ``dispatch`` runs the
common case — planned, admitted and sent in one go, answered from the upstream's callback —
without a task, and moves onto the coroutine path only for what must wait (a fault delay, a
connection slot, a retry's backoff)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final
from urllib.parse import parse_qs

from tulle.engine import errors
from tulle.engine.cluster import ClusterState
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.config import RouteEntry, RouteTable, WeightedCluster
from tulle.engine.message import Request, Response, UpstreamError, finished, mesh_response
from tulle.engine.ratelimit import TokenBucket
from tulle.engine.tasks import Cancel, nothing_to_cancel, spawn
from tulle.obs.metrics import SOURCE_WORKLOAD_HEADER
from tulle.obs.tap import Tap

Sender = Callable[[EndpointSpec, ClusterSpec, Request], Awaitable[Response]]
Outcome = Response | UpstreamError
# ``send`` with a callback: the outcome comes to the callback later (never before the starter
# returns). Returns the function that abandons the attempt (no callback follows).
Starter = Callable[
    [EndpointSpec, ClusterSpec, Request, Callable[[Outcome], None]], Callable[[], None]
]

_GRPC_NAMES: Final = {
    "1": "cancelled", "4": "deadline-exceeded", "8": "resource-exhausted", "13": "internal",
    "14": "unavailable",
}  # fmt: skip

log: Final = logging.getLogger(__name__)
# The module's own name for it: compiled code reads a Final from a static, not from the
# module's globals dict (every request uses it).
_NOTHING_TO_CANCEL: Final = nothing_to_cancel


@dataclass(frozen=True)
class EngineConfig:
    """Compiled config the engine runs on; replaced whole on every update."""

    version: str = ""
    route_tables: Mapping[str, RouteTable] = field(default_factory=lambda: MappingProxyType({}))
    clusters: Mapping[str, ClusterSpec] = field(default_factory=lambda: MappingProxyType({}))
    endpoints: Mapping[str, tuple[EndpointSpec, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )


# The per-request records below are plain classes, not dataclasses: compiled, a dataclass's
# __init__ stays interpreted, at several times the cost.


class _RequestParts:
    """A request's path, query string, headers (first value by lowercase name; built only when
    a route table reads them) and query."""

    __slots__ = ("headers", "path", "query", "query_string")

    def __init__(
        self, path: str, query_string: str, headers: dict[str, str], query: dict[str, list[str]]
    ) -> None:
        self.path, self.query_string, self.headers, self.query = path, query_string, headers, query


_NO_HEADERS: Final[dict[str, str]] = {}
_NO_QUERY: Final[dict[str, list[str]]] = {}


class Plan:
    """A request's way decided before its first attempt: the route, the weighted cluster
    chosen, the request as it goes upstream, and the hash key for ring-hash balancing."""

    __slots__ = ("chosen", "cluster", "key", "request", "route")

    def __init__(
        self,
        route: RouteEntry,
        chosen: WeightedCluster,
        cluster: ClusterState,
        request: Request,
        key: bytes | None,
    ) -> None:
        self.route, self.chosen, self.cluster, self.request, self.key = (
            route, chosen, cluster, request, key
        )  # fmt: skip


@dataclass(slots=True)
class Delayed:
    """A fault delay comes first; the rest is planned after it."""

    route: RouteEntry
    parts: _RequestParts
    delay: float


class _Call:
    """A request admitted to its cluster: attempts made so far, endpoints tried, and the loop
    time its timeout ends (None: no timeout): the route's, or the gRPC client's deadline
    (``grpc-timeout``) when that comes first (``grpc_deadline``)."""

    __slots__ = ("attempt", "deadline", "grpc_deadline", "plan", "timeout", "tried")

    def __init__(
        self, plan: Plan, deadline: float | None, timeout: float, grpc_deadline: bool
    ) -> None:
        self.plan, self.deadline, self.timeout = plan, deadline, timeout
        self.grpc_deadline = grpc_deadline
        self.attempt = 0
        self.tried: set[str] = set()


# grpc-timeout units (gRPC over HTTP/2: "1*8DIGIT unit")
_GRPC_TIMEOUT_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def grpc_timeout(value: str | None) -> float | None:
    """The seconds a ``grpc-timeout`` header gives (None: absent, or not the protocol's form,
    which is then ignored, as gRPC servers do)."""
    if not value or len(value) > 9:
        return None
    scale = _GRPC_TIMEOUT_UNITS.get(value[-1])
    digits = value[:-1]
    if scale is None or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits) * scale


class Engine:
    """Runs requests through the outbound stack on the config in force when each started."""

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
        table = self.config.route_tables.get(table_name)
        headers = (
            dict(reversed(request.headers))
            if table is not None and table.reads_headers
            else _NO_HEADERS
        )
        query = parse_qs(query_string, keep_blank_values=True) if query_string else _NO_QUERY
        parts = _RequestParts(path, query_string, headers, query)
        if table is None:
            return None, parts
        return table.route(request.authority, path, headers, query), parts

    def _upstream(
        self, route: RouteEntry, request: Request, parts: _RequestParts
    ) -> tuple[WeightedCluster, ClusterState, Request] | WeightedCluster:
        """The cluster chosen by weight, and the request as it goes there (rewrites and header
        edits applied, the caller's workload named); only the choice when the proxy does not
        know that cluster (yet)."""
        chosen = route.pick_cluster(self.chance)
        cluster = self.clusters.get(chosen.name)
        if cluster is None:
            return chosen
        upstream = _rewrite(route, request, parts.path, parts.query_string)
        headers = request.headers
        if self.identity is not None:  # a copy without any the app passed on, then ours
            headers = [h for h in headers if h[0] != SOURCE_WORKLOAD_HEADER]
            headers.append(self.identity)
        else:
            headers = list(headers)
        upstream.headers = chosen.request_edits.apply(route.request_edits.apply(headers))
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
        route, parts = self._match(table_name, request)
        if route is None:
            return mesh_response(errors.no_route(request.authority, parts.path), request.is_grpc)
        if route.redirect is not None:
            return _redirect(route, request, parts.path, parts.query_string)
        fault = route.fault
        if (
            fault is not None
            and fault.delay is not None
            and self.chance.random() < fault.delay_chance
        ):
            return Delayed(route, parts, fault.delay)
        return self._plan_route(route, request, parts)

    def _plan_route(
        self, route: RouteEntry, request: Request, parts: _RequestParts
    ) -> Plan | Response:
        fault = route.fault
        if fault is not None and self.chance.random() < fault.abort_chance:
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
        target = self._upstream(route, request, parts)
        if isinstance(target, WeightedCluster):
            missing = errors.no_cluster(target.name)
            return mesh_response(missing, request.is_grpc, target.name, route.name)
        chosen, cluster, upstream = target
        if route.mirrors and upstream.replayable:
            for mirror in route.mirrors:
                if self.chance.random() < mirror.chance:
                    self._mirror(mirror.cluster, upstream)
        key = _hash_key(route, request, parts.headers, parts.query)
        return Plan(route, chosen, cluster, upstream, key)

    def _finish(self, plan: Plan, response: Response) -> Response:
        response.route = plan.route.name
        edits = plan.route.response_edits
        response.headers = plan.chosen.response_edits.apply(edits.apply(response.headers))
        return response

    def _admit(self, plan: Plan) -> _Call | Response:
        """The request enters the cluster (``counters.requests``), unless its breaker is open."""
        cluster = plan.cluster
        refused = cluster.admit_request()
        if refused is not None:
            return mesh_response(refused, plan.request.is_grpc, cluster.spec.name)
        cluster.counters.requests += 1
        timeout = plan.route.timeout or None
        grpc_deadline = False
        if plan.request.http2:  # a gRPC client's deadline ends the call sooner (as Istio's routes)
            asked = grpc_timeout(plan.request.header("grpc-timeout"))
            if asked is not None and (timeout is None or asked < timeout):
                timeout, grpc_deadline = asked, True
        if timeout is None:
            return _Call(plan, None, 0.0, False)
        return _Call(plan, asyncio.get_running_loop().time() + timeout, timeout, grpc_deadline)

    # --- with coroutines: always correct, the fallback of the fast path ---------------------

    async def handle(self, table_name: str, request: Request) -> Response:
        """One request through the stack, using the route table ``table_name``."""
        return await self.run(request, self.plan(table_name, request))

    async def run(self, request: Request, planned: Plan | Delayed | Response) -> Response:
        """Carry out a plan (and its route's fallback, when the answer calls for it)."""
        if isinstance(planned, Delayed):
            await asyncio.sleep(planned.delay)
            planned = self._plan_route(planned.route, request, planned.parts)
        if isinstance(planned, Response):
            return planned
        response = await self._attempts(planned)
        again = self._fallback_for(planned, response)
        return response if again is None else await self._attempts(again)

    async def _attempts(self, planned: Plan) -> Response:
        """Admission to the cluster, then attempts until one settles."""
        call = self._admit(planned)
        if isinstance(call, Response):
            return self._finish(planned, call)
        try:
            response = await self._continue(call, None)
        finally:
            planned.cluster.counters.requests -= 1
        return self._finish(planned, response)

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
        return Plan(route, chosen, cluster, plan.request, plan.key)

    async def _continue(self, call: _Call, retrying: Outcome | None) -> Response:
        """Attempts until one settles, within the route's timeout. ``retrying``: the outcome of
        an attempt already made (by the fast path) that is to be retried."""
        try:
            if call.deadline is None:
                return await self._retry_loop(call, retrying)
            async with asyncio.timeout_at(call.deadline):
                return await self._retry_loop(call, retrying)
        except TimeoutError:
            return self._timed_out(call)

    def _timed_out(self, call: _Call) -> Response:
        name = call.plan.cluster.spec.name
        error = errors.request_timeout(call.timeout, name, call.grpc_deadline)
        return mesh_response(error, call.plan.request.is_grpc, name)

    async def _retry_loop(self, call: _Call, retrying: Outcome | None) -> Response:
        plan = call.plan
        cluster, request, retry = plan.cluster, plan.request, plan.route.retry
        while True:
            if retrying is not None:
                if isinstance(retrying, Response):
                    await retrying.release()
                await asyncio.sleep(retry.backoff(call.attempt, self.chance))  # type: ignore[union-attr]
            endpoint = self._pick(call)
            if isinstance(endpoint, Response):
                return endpoint
            # HTTP/1.1 holds a connection per request in flight; HTTP/2 multiplexes, so only
            # max_requests limits it.
            slot = not cluster.spec.upstream_http2(request.http2)
            refused = await cluster.acquire_connection() if slot else None
            if refused is not None:
                return mesh_response(refused, request.is_grpc, cluster.spec.name)
            self._enter(call, endpoint)
            outcome: Outcome
            try:
                outcome = await self._one_attempt(
                    retry.per_try_timeout if retry else None, endpoint, cluster, request
                )
            except UpstreamError as failure:
                outcome = failure
            finally:
                self._leave(call, endpoint, slot)
            settled = self._settle(call, endpoint, outcome)
            if settled is not None:
                return settled
            retrying = outcome

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

    # --- the steps both paths share ---------------------------------------------------------

    def _pick(self, call: _Call) -> EndpointSpec | Response:
        cluster, key = call.plan.cluster, call.plan.key
        tried = frozenset(call.tried) if key is None and call.tried else frozenset()
        endpoint = cluster.pick(key, self.clock(), tried)
        if endpoint is None:
            name = cluster.spec.name
            return mesh_response(errors.no_healthy_endpoint(name), call.plan.request.is_grpc, name)
        return endpoint

    @staticmethod
    def _enter(call: _Call, endpoint: EndpointSpec) -> None:
        """An attempt starts."""
        cluster = call.plan.cluster
        call.attempt += 1
        if call.attempt > 1:
            cluster.counters.retries += 1
        call.tried.add(endpoint.key)
        cluster.active[endpoint.key] = cluster.active.get(endpoint.key, 0) + 1

    @staticmethod
    def _leave(call: _Call, endpoint: EndpointSpec, slot: bool, cancelled: bool = False) -> None:
        """An attempt ended (``cancelled``: and its request with it, the client gone)."""
        cluster = call.plan.cluster
        if slot:
            cluster.release_connection()
        cluster.active[endpoint.key] -= 1
        if call.attempt > 1:
            cluster.counters.retries -= 1
        if cancelled:
            cluster.counters.requests -= 1

    def _settle(self, call: _Call, endpoint: EndpointSpec, outcome: Outcome) -> Response | None:
        """What an attempt's outcome means: the response to give, or None to retry (allowed by
        the route's retry policy, the attempts left, the body and the retry budget)."""
        plan = call.plan
        cluster, request, retry = plan.cluster, plan.request, plan.route.retry
        name = cluster.spec.name
        more = retry is not None and call.attempt <= retry.attempts
        if isinstance(outcome, UpstreamError):
            if outcome.kind == "overflow":  # the sender's connection limit: not the endpoint's
                return self._overflowed(call, endpoint)
            if outcome.kind == "client":  # the request's own body failed: not the endpoint's
                produced = mesh_response(errors.downstream_failure(str(outcome)), request.is_grpc)
                produced.upstream, produced.attempts = endpoint.key, call.attempt
                return produced
            cluster.record(endpoint, None, self.clock())
            if (
                more
                and retry.retries_error(outcome.kind)  # type: ignore[union-attr]
                and _rewind(request)
                and cluster.admit_retry()
            ):
                if self.tap.active:
                    self._tap_retry(call, endpoint, outcome)
                return None
            error = errors.upstream_failure(f"{outcome.kind} {outcome}", endpoint.key, name)
            produced = mesh_response(error, request.is_grpc, name)
            produced.upstream, produced.attempts = endpoint.key, call.attempt
            if call.attempt > 1:
                produced.flag += ",URX"
            return produced
        response = outcome
        cluster.record(endpoint, response.status, self.clock())
        response.upstream, response.cluster, response.attempts = endpoint.key, name, call.attempt
        response.upstream_workload = endpoint.workload
        if retry is None:
            return response
        grpc_name = None
        if request.http2:  # a gRPC status, in the headers (trailers-only) or the trailers
            status_text = response.header("grpc-status") or next(
                (v for k, v in response.trailers if k == "grpc-status"), ""
            )
            grpc_name = _GRPC_NAMES.get(status_text)
        retriable = retry.retries_status(response.status, grpc_name)
        if retriable and more and _rewind(request) and cluster.admit_retry():
            if self.tap.active:
                self._tap_retry(call, endpoint, response)
            return None
        if retriable and call.attempt > 1:
            response.flag = "URX"
        return response

    def _tap_retry(self, call: _Call, endpoint: EndpointSpec, outcome: Outcome) -> None:
        """Show ``tulle tap`` an attempt that failed and is retried. Its time is the request's
        so far when the request has a timeout (its start is then known: the deadline less the
        timeout), else 0: an attempt's own start is not kept, to cost nothing untapped."""
        plan = call.plan
        name = plan.cluster.spec.name
        if isinstance(outcome, UpstreamError):
            error = errors.upstream_failure(f"{outcome.kind} {outcome}", endpoint.key, name)
            outcome = Response(error.status, [], b"", error.flag, error.reason)
        outcome.upstream, outcome.cluster, outcome.attempts = endpoint.key, name, call.attempt
        outcome.upstream_workload, outcome.route = endpoint.workload, plan.route.name
        now = time.time()
        started = now
        if call.deadline is not None:
            began = call.deadline - call.timeout
            started -= max(0.0, asyncio.get_running_loop().time() - began)
        self.tap.publish_retry(finished("", plan.request, outcome, started, now, 0))

    def _overflowed(self, call: _Call, endpoint: EndpointSpec) -> Response:
        """An attempt the sender could not start within the cluster's ``max_connections`` (an
        HTTP/2 pool with no stream free, every connection open, ``max_pending`` waiting): the
        breaker's answer, not retried (as Envoy)."""
        cluster = call.plan.cluster
        cluster.overflows += 1
        limit = cluster.spec.limits.max_connections or 0
        error = errors.circuit_open(cluster.spec.name, "max connections", limit)
        produced = mesh_response(error, call.plan.request.is_grpc, cluster.spec.name)
        produced.upstream, produced.attempts = endpoint.key, call.attempt
        return produced

    # --- the fast path: callbacks instead of coroutines -------------------------------------

    def dispatch(
        self, table_name: str, request: Request, done: Callable[[Response], None]
    ) -> Cancel:
        """``handle`` without a coroutine where it can: the plan and the first attempt run in
        callbacks (``start``), and only a fault delay, a wait for a connection slot, or a retry
        moves the request onto the coroutine path. ``done`` gets the response (possibly
        before this returns). Returns the function that cancels the request (the client went
        away): the attempt under way is abandoned (an HTTP/2 stream is reset), the cluster's
        counts are given back, and ``done`` is not called."""
        planned = self.plan(table_name, request)
        if isinstance(planned, Response):
            done(planned)
            return _NOTHING_TO_CANCEL
        if isinstance(planned, Delayed) or self.start is None:
            return spawn(self.run(request, planned), done)
        cancel = _Cancel()
        if planned.route.fallback is None:
            self._attempt_plan(planned, done, cancel)
            return cancel
        first = planned

        def answered(response: Response) -> None:
            again = self._fallback_for(first, response)
            if again is None:
                done(response)
            else:
                self._attempt_plan(again, done, cancel)

        self._attempt_plan(planned, answered, cancel)
        return cancel

    def _attempt_plan(
        self, planned: Plan, done: Callable[[Response], None], cancel: _Cancel
    ) -> None:
        """Admission, then the first attempt in callbacks."""
        call = self._admit(planned)
        if isinstance(call, Response):
            done(self._finish(planned, call))
            return
        self._first_attempt(call, done, cancel)

    def _first_attempt(
        self, call: _Call, done: Callable[[Response], None], cancel: _Cancel
    ) -> None:
        plan = call.plan
        cluster, request, retry = plan.cluster, plan.request, plan.route.retry
        assert self.start is not None
        attempt = _FirstAttempt(self, call, done, cancel)
        endpoint = self._pick(call)
        if isinstance(endpoint, Response):
            attempt.finish(endpoint)
            return
        slot = not cluster.spec.upstream_http2(request.http2)  # HTTP/1.1 holds a connection
        if slot and not cluster.take_free_connection():
            attempt.slow(None)  # waits for a connection slot, or overflows
            return
        attempt.endpoint, attempt.slot = endpoint, slot
        self._enter(call, endpoint)
        cancel.current = attempt.cancel_attempt  # unless the attempt ends before start returns
        try:
            attempt.abandon = self.start(endpoint, cluster.spec, request, attempt.outcome)
        except Exception as failure:  # a sender's bug: an answer, and every count given back
            log.exception("sending a request failed inside the proxy")
            attempt.outcome(UpstreamError("reset", f"unexpected {failure!r}"))
            return
        per_try = retry.per_try_timeout if retry else None
        if per_try is None and call.deadline is None:
            return
        loop = asyncio.get_running_loop()
        per_try_at = loop.time() + per_try if per_try is not None else None
        whole = call.deadline is not None and (per_try_at is None or call.deadline <= per_try_at)
        attempt.whole, attempt.per_try = whole, per_try or 0.0
        at = call.deadline if whole else per_try_at
        assert at is not None
        attempt.timer = loop.call_at(at, attempt.expire)

    def _to_coroutine(
        self,
        call: _Call,
        retrying: Outcome | None,
        finish: Callable[[Response], None],
        cancel: _Cancel,
    ) -> None:
        """The request goes on in a coroutine (a wait for a connection slot, a retry);
        cancelling it cancels that (the coroutine gives back what its attempt holds)."""
        stop = spawn(self._continue(call, retrying), finish)
        cluster = call.plan.cluster

        def cancel_coroutine() -> None:
            stop()
            cluster.counters.requests -= 1

        cancel.current = cancel_coroutine

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


class _FirstAttempt:
    """A request's first attempt on the fast path, answered by callback: the endpoint it went
    to (holding an HTTP/1.1 connection slot when ``slot``), the timer that ends it at its
    per-try timeout or the request's deadline (``whole``), and how it ends: answered
    (``finish``) or moved onto a coroutine (``slow``: a wait for a connection slot, or a
    retry). One object per request, whose methods are the callbacks: nested functions that
    call each other would make a reference cycle per request for the garbage collector."""

    __slots__ = (
        "abandon", "call", "cancel", "done", "endpoint", "engine", "per_try", "slot", "timer",
        "whole",
    )  # fmt: skip

    def __init__(
        self, engine: Engine, call: _Call, done: Callable[[Response], None], cancel: _Cancel
    ) -> None:
        self.engine, self.call, self.done, self.cancel = engine, call, done, cancel
        self.endpoint: EndpointSpec | None = None  # once picked
        self.slot = False
        self.abandon: Cancel = _NOTHING_TO_CANCEL  # once sent
        self.timer: asyncio.TimerHandle | None = None
        self.whole = False
        self.per_try = 0.0

    def finish(self, response: Response) -> None:
        """The request's answer."""
        # Let go of the sent attempt: it holds ``outcome``, and so this object.
        self.cancel.current = self.abandon = _NOTHING_TO_CANCEL
        plan = self.call.plan
        plan.cluster.counters.requests -= 1
        self.done(self.engine._finish(plan, response))

    def slow(self, retrying: Outcome | None) -> None:
        """Go on in a coroutine, after the failed attempt ``retrying`` (None: none yet)."""
        self.engine._to_coroutine(self.call, retrying, self.finish, self.cancel)

    def outcome(self, result: Outcome) -> None:
        """The endpoint answered, or failed."""
        if self.timer is not None:
            self.timer.cancel()
        engine, call, endpoint = self.engine, self.call, self.endpoint
        assert endpoint is not None
        engine._leave(call, endpoint, self.slot)
        settled = engine._settle(call, endpoint, result)
        if settled is None:
            self.slow(result)
        else:
            self.finish(settled)

    def cancel_attempt(self) -> None:
        """The client went away: the attempt is abandoned and what it holds given back."""
        if self.timer is not None:
            self.timer.cancel()
        self.abandon()
        assert self.endpoint is not None
        self.engine._leave(self.call, self.endpoint, self.slot, cancelled=True)

    def expire(self) -> None:
        """The per-try timeout or the request's deadline came first."""
        self.timer = None
        self.abandon()
        if not self.whole:
            self.outcome(UpstreamError("timeout", f"per-try timeout {self.per_try:g}s"))
            return
        assert self.endpoint is not None
        self.engine._leave(self.call, self.endpoint, self.slot)
        self.finish(self.engine._timed_out(self.call))


class _Cancel:
    """Cancels a request on the fast path, whatever it is doing: its first attempt, the
    coroutine it moved to, or (once answered) nothing."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: Cancel = _NOTHING_TO_CANCEL

    def __call__(self) -> None:
        current, self.current = self.current, _NOTHING_TO_CANCEL  # once
        current()


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
    return Request(request.method, new_path, authority, request.headers, request.body,
                   request.source_ip, request.http2, request.interim)  # fmt: skip


_WELL_KNOWN_PORTS = frozenset({("http", 80), ("https", 443)})


def _redirect(route: RouteEntry, request: Request, path: str, query_string: str) -> Response:
    """The redirect's answer; a scheme's well-known port is left out of its Location (as the
    Gateway API's RequestRedirect asks)."""
    spec = route.redirect
    assert spec is not None
    scheme = spec.scheme or "http"
    host = spec.host or request.authority.split(":")[0]
    if spec.port:
        if (scheme, spec.port) not in _WELL_KNOWN_PORTS:
            host = f"{host}:{spec.port}"
    elif not spec.host and ":" in request.authority:
        host = request.authority
    new_path = spec.path or path
    if spec.prefix is not None and route.path.kind == "prefix":
        new_path = spec.prefix + path[len(route.path.value) :]
    if query_string:
        new_path += "?" + query_string
    location = f"{scheme}://{host}{new_path}"
    return Response(
        spec.status, [("location", location), ("content-length", "0")], b"", route=route.name
    )


def _grpc_abort(code: int) -> Response:
    return mesh_response(errors.fault_abort(503), grpc=True, grpc_code=code)
