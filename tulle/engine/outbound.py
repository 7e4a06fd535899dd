"""The outbound stack: route → fault → rate limit → retry (with budget) → timeout → circuit
breaker → load balancer → outlier detection → endpoint. The front end supplies ``send``, which
carries one attempt to one endpoint (and, for speed, ``start``, the same with a callback);
everything else happens here (the plan in :mod:`tulle.engine.planner`, which this builds on;
admission and the attempts below), the same for sidecar and library.

Two paths share every decision: ``handle`` runs a request as coroutines; ``dispatch`` runs the
common case — planned, admitted and sent in one go, answered from the upstream's callback —
without a task, and moves onto the coroutine path only for what must wait (a fault delay, a
connection slot, a retry's backoff)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from tulle.engine.attempt_steps import (
    Outcome,
    enter,
    leave,
    pick,
    settle,
    timed_out,
    trace_attempt,
)
from tulle.engine.cluster import ClusterState
from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.message import Request, Response, UpstreamError, mesh_response
from tulle.engine.plan import (
    Call,
    CancelRequest,
    Delayed,
    EngineConfig,
    Plan,
    grpc_timeout,
)
from tulle.engine.planner import Planner, Sender, Starter
from tulle.engine.tasks import Cancel, nothing_to_cancel, spawn

__all__ = [
    "Delayed",
    "Engine",
    "EngineConfig",
    "Outcome",
    "Plan",
    "Sender",
    "Starter",
    "grpc_timeout",
]  # fmt: skip

log: Final = logging.getLogger(__name__)
# The module's own name for it: compiled code reads a Final from a static, not from the
# module's globals dict (every request uses it).
_NOTHING_TO_CANCEL: Final = nothing_to_cancel


class Engine(Planner):
    """Runs requests through the outbound stack on the config in force when each started."""

    def _admit(self, plan: Plan) -> Call | Response:
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
            return Call(plan, None, 0.0, False)
        return Call(plan, asyncio.get_running_loop().time() + timeout, timeout, grpc_deadline)

    # --- with coroutines: always correct, the fallback of the fast path ---------------------

    async def handle(self, table_name: str, request: Request) -> Response:
        """One request through the stack, using the route table ``table_name``."""
        return await self.run(request, self.plan(table_name, request))

    async def run(self, request: Request, planned: Plan | Delayed | Response) -> Response:
        """Carry out a plan (and its route's fallback, when the answer calls for it)."""
        if isinstance(planned, Delayed):
            await asyncio.sleep(planned.delay)
            route = planned.route
            planned = self._plan_route(route, request, planned.parts)
            if route.cors is not None and isinstance(planned, Response):
                route.cors.decorate(request, planned)
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

    async def _continue(self, call: Call, retrying: Outcome | None) -> Response:
        """Attempts until one settles, within the route's timeout. ``retrying``: the outcome of
        an attempt already made (by the fast path) that is to be retried."""
        try:
            if call.deadline is None:
                return await self._retry_loop(call, retrying)
            async with asyncio.timeout_at(call.deadline):
                return await self._retry_loop(call, retrying)
        except TimeoutError:
            return timed_out(call)

    async def _retry_loop(self, call: Call, retrying: Outcome | None) -> Response:
        plan = call.plan
        cluster, request, retry = plan.cluster, plan.request, plan.route.retry
        while True:
            if retrying is not None:
                if isinstance(retrying, Response):
                    await retrying.release()
                await asyncio.sleep(retry.backoff(call.attempt, self.chance))  # type: ignore[union-attr]
            endpoint = pick(call, self.clock())
            if isinstance(endpoint, Response):
                return endpoint
            # HTTP/1.1 holds a connection per request in flight; HTTP/2 multiplexes, so only
            # max_requests limits it.
            slot = not cluster.spec.upstream_http2(request.http2)
            refused = await cluster.acquire_connection() if slot else None
            if refused is not None:
                return mesh_response(refused, request.is_grpc, cluster.spec.name)
            enter(call, endpoint)
            outcome: Outcome
            try:
                outcome = await self._one_attempt(
                    retry.per_try_timeout if retry else None, endpoint, cluster, request
                )
            except UpstreamError as failure:
                outcome = failure
            finally:
                leave(call, endpoint, slot)
            settled = settle(call, endpoint, outcome, self.clock(), self.tap)
            span = request.span
            if span is not None:
                trace_attempt(span, call, endpoint, outcome, settled)
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
        cancel = CancelRequest()
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
        self, planned: Plan, done: Callable[[Response], None], cancel: CancelRequest
    ) -> None:
        """Admission, then the first attempt in callbacks."""
        call = self._admit(planned)
        if isinstance(call, Response):
            done(self._finish(planned, call))
            return
        self._first_attempt(call, done, cancel)

    def _first_attempt(
        self, call: Call, done: Callable[[Response], None], cancel: CancelRequest
    ) -> None:
        plan = call.plan
        cluster, request, retry = plan.cluster, plan.request, plan.route.retry
        assert self.start is not None
        attempt = _FirstAttempt(self, call, done, cancel)
        endpoint = pick(call, self.clock())
        if isinstance(endpoint, Response):
            attempt.finish(endpoint)
            return
        slot = not cluster.spec.upstream_http2(request.http2)  # HTTP/1.1 holds a connection
        if slot and not cluster.take_free_connection():
            attempt.slow(None)  # waits for a connection slot, or overflows
            return
        attempt.endpoint, attempt.slot = endpoint, slot
        enter(call, endpoint)
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
        call: Call,
        retrying: Outcome | None,
        finish: Callable[[Response], None],
        cancel: CancelRequest,
    ) -> None:
        """The request goes on in a coroutine (a wait for a connection slot, a retry);
        cancelling it cancels that (the coroutine gives back what its attempt holds)."""
        stop = spawn(self._continue(call, retrying), finish)
        cluster = call.plan.cluster

        def cancel_coroutine() -> None:
            stop()
            cluster.counters.requests -= 1

        cancel.current = cancel_coroutine


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
        self, engine: Engine, call: Call, done: Callable[[Response], None], cancel: CancelRequest
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
        leave(call, endpoint, self.slot)
        settled = settle(call, endpoint, result, engine.clock(), engine.tap)
        span = call.plan.request.span
        if span is not None:
            trace_attempt(span, call, endpoint, result, settled)
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
        leave(self.call, self.endpoint, self.slot, cancelled=True)

    def expire(self) -> None:
        """The per-try timeout or the request's deadline came first."""
        self.timer = None
        self.abandon()
        if not self.whole:
            self.outcome(UpstreamError("timeout", f"per-try timeout {self.per_try:g}s"))
            return
        assert self.endpoint is not None
        leave(self.call, self.endpoint, self.slot)
        self.finish(timed_out(self.call))
