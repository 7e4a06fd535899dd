"""The trace store's query API on the control plane's HTTP port (admin token, as the rest of
``/api/v1``): ``GET /api/v1/traces`` lists recent traces, filtered; ``GET
/api/v1/traces/{traceId}`` is one trace, ready for a waterfall. Parameters and JSON shapes:
docs/observability.md ("The query API")."""

from __future__ import annotations

import math
import re
from typing import Final

from tulle.control.traces.store import DEFAULT_LIMIT, MAX_LIMIT, TraceQuery, TraceStore
from tulle.control.traces.views import counts_json, summary_json, trace_json
from tulle.transport.http_server import Request, Response, error_response, json_response

PATH: Final = "/api/v1/traces"
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_PARAMETERS = ("service", "status", "minDurationMs", "since", "until", "limit")


class QueryError(ValueError):
    """A query parameter that cannot be used; the message names it."""


def _number(request: Request, name: str, low: float = 0.0) -> float | None:
    text = request.param(name)
    if text is None or text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        raise QueryError(f"{name}: {text[:40]!r} is not a number") from None
    if not math.isfinite(number) or number < low:
        raise QueryError(f"{name}: {text[:40]!r} must be a finite number of at least {low:g}")
    return number


def parse_query(request: Request) -> TraceQuery:
    """The :class:`TraceQuery` of a list request; :class:`QueryError` names a bad parameter."""
    unknown = sorted(set(request.query) - set(_PARAMETERS))
    if unknown:
        raise QueryError(
            f"unknown parameter {unknown[0][:40]!r}; the parameters are {', '.join(_PARAMETERS)}"
        )
    status = request.param("status") or None
    if status not in (None, "ok", "error"):
        raise QueryError(f"status: {status[:40]!r} is not ok or error")
    limit = _number(request, "limit", 1)
    if limit is not None and (limit != int(limit) or limit > MAX_LIMIT):
        raise QueryError(f"limit: a whole number from 1 to {MAX_LIMIT}")
    since, until = _number(request, "since"), _number(request, "until")
    return TraceQuery(
        service=request.param("service") or None,
        error=None if status is None else status == "error",
        min_duration_ns=int((_number(request, "minDurationMs") or 0) * 1e6),
        since_ns=None if since is None else int(since * 1e9),
        until_ns=None if until is None else int(until * 1e9),
        limit=DEFAULT_LIMIT if limit is None else int(limit),
    )


def respond(store: TraceStore, request: Request) -> Response:
    """The answer to ``GET /api/v1/traces[/{traceId}]``."""
    if request.method != "GET":
        return error_response(405, f"{request.method[:20]} is not allowed on {PATH}; use GET")
    rest = request.path.rstrip("/")[len(PATH) :].strip("/")
    if not rest:
        try:
            query = parse_query(request)
        except QueryError as error:
            return error_response(400, str(error))
        traces = [summary_json(s) for s in store.find(query)]
        counts = counts_json(store.counts, store.max_spans)
        return json_response({"traces": traces, "store": counts})
    trace_id = rest.lower()
    if not _TRACE_ID.fullmatch(trace_id):
        return error_response(400, f"{rest[:64]!r} is not a trace id (32 hex digits)")
    trace = store.get(trace_id)
    if trace is None:
        return error_response(
            404,
            f"no trace {trace_id} in the store (never received, or evicted: it keeps the last "
            f"{store.max_spans} spans)",
        )
    return json_response(trace_json(trace))
