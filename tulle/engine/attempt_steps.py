"""The steps every attempt of the outbound stack takes, on both of the engine's paths (callbacks
and coroutines): pick an endpoint, enter and leave it (the cluster's counts), and settle its
outcome: the answer to give, or a retry (the route's policy, the attempts left, the body, the
retry budget); and the mesh's answers when the breaker's connection limit or the timeout
comes first."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from tulle.engine import errors
from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.message import Response, UpstreamError, finished, mesh_response
from tulle.engine.plan import Call, rewind
from tulle.obs.tap import Tap
from tulle.obs.tracing import Span

Outcome = Response | UpstreamError

_GRPC_NAMES: Final = {
    "1": "cancelled", "4": "deadline-exceeded", "8": "resource-exhausted", "13": "internal",
    "14": "unavailable",
}  # fmt: skip


def pick(call: Call, now: float) -> EndpointSpec | Response:
    """The endpoint of the next attempt (not one tried already, unless by hash), or the
    mesh's answer when none is healthy."""
    cluster, key = call.plan.cluster, call.plan.key
    tried = frozenset(call.tried) if key is None and call.tried else frozenset()
    endpoint = cluster.pick(key, now, tried)
    if endpoint is None:
        name = cluster.spec.name
        return mesh_response(errors.no_healthy_endpoint(name), call.plan.request.is_grpc, name)
    return endpoint


def enter(call: Call, endpoint: EndpointSpec) -> None:
    """An attempt starts."""
    cluster = call.plan.cluster
    call.attempt += 1
    if call.attempt > 1:
        cluster.counters.retries += 1
    call.tried.add(endpoint.key)
    cluster.active[endpoint.key] = cluster.active.get(endpoint.key, 0) + 1
    span = call.plan.request.span
    if span is not None:
        span.attempt_started = time.time()


def leave(call: Call, endpoint: EndpointSpec, slot: bool, cancelled: bool = False) -> None:
    """An attempt ended (``cancelled``: and its request with it, the client gone)."""
    cluster = call.plan.cluster
    if slot:
        cluster.release_connection()
    cluster.active[endpoint.key] -= 1
    if call.attempt > 1:
        cluster.counters.retries -= 1
    if cancelled:
        cluster.counters.requests -= 1


def settle(
    call: Call, endpoint: EndpointSpec, outcome: Outcome, now: float, tap: Tap
) -> Response | None:
    """What an attempt's outcome means: the response to give, or None to retry (allowed by
    the route's retry policy, the attempts left, the body and the retry budget)."""
    plan = call.plan
    cluster, request, retry = plan.cluster, plan.request, plan.route.retry
    name = cluster.spec.name
    more = retry is not None and call.attempt <= retry.attempts
    if isinstance(outcome, UpstreamError):
        if outcome.kind == "overflow":  # the sender's connection limit: not the endpoint's
            return overflowed(call, endpoint)
        if outcome.kind == "client":  # the request's own body failed: not the endpoint's
            produced = mesh_response(errors.downstream_failure(str(outcome)), request.is_grpc)
            produced.upstream, produced.attempts = endpoint.key, call.attempt
            return produced
        cluster.record(endpoint, None, now)
        if (
            more
            and retry.retries_error(outcome.kind)  # type: ignore[union-attr]
            and rewind(request)
            and cluster.admit_retry()
        ):
            if tap.active:
                tap_retry(tap, call, endpoint, outcome)
            return None
        error = errors.upstream_failure(f"{outcome.kind} {outcome}", endpoint.key, name)
        produced = mesh_response(error, request.is_grpc, name)
        produced.upstream, produced.attempts = endpoint.key, call.attempt
        if call.attempt > 1:
            produced.flag += ",URX"
        return produced
    response = outcome
    cluster.record(endpoint, response.status, now)
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
    if retriable and more and rewind(request) and cluster.admit_retry():
        if tap.active:
            tap_retry(tap, call, endpoint, response)
        return None
    if retriable and call.attempt > 1:
        response.flag = "URX"
    return response


def tap_retry(tap: Tap, call: Call, endpoint: EndpointSpec, outcome: Outcome) -> None:
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
    tap.publish_retry(finished("", plan.request, outcome, started, now, 0))


def overflowed(call: Call, endpoint: EndpointSpec) -> Response:
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


def timed_out(call: Call) -> Response:
    """The mesh's answer to a request whose timeout (or gRPC deadline) came first."""
    name = call.plan.cluster.spec.name
    error = errors.request_timeout(call.timeout, name, call.grpc_deadline)
    return mesh_response(error, call.plan.request.is_grpc, name)


def trace_attempt(
    span: Span, call: Call, endpoint: EndpointSpec, outcome: Outcome, settled: Response | None
) -> None:
    """The client span's record of an attempt that ended (``settled`` None: it is retried);
    made into its event when the span is exported (:meth:`~tulle.obs.tracing.Span.attempt`)."""
    if isinstance(outcome, UpstreamError):
        status, error, reason = 0, outcome.kind, str(outcome)
    else:
        status, error, reason = outcome.status, "", ""
    span.attempt(time.time(), call.attempt, endpoint.key, status, error, reason, settled is None)


def trace_fallback(span: Span, cluster: str, response: Response) -> None:
    """The client span's event for a request sent on to its route's fallback ``cluster``
    after ``response``."""
    attributes: list[tuple[str, str | int | float | bool]] = [
        ("tulle.upstream_cluster", cluster), ("http.response.status_code", response.status),
        ("tulle.response_flags", response.flag),
    ]  # fmt: skip
    if response.reason:
        attributes.append(("tulle.reason", response.reason))
    span.event(time.time(), "fallback", attributes)
