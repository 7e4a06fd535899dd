"""``GET /tap`` as the sidecar's admin listener and the library's serve it: the query's filters
(``path``, ``method``, ``authority``, ``status``) and ``max`` read, a subscriber made (or a
clear refusal), and the streaming response of its :class:`~tulle.obs.tap.Feed`. Whoever calls
it has authenticated the request first: a tap shows the requests' paths and peers."""

from __future__ import annotations

from tulle.obs.tap import MAX_SUBSCRIBERS, Feed, Tap, TapFilter, TapFilterError
from tulle.transport.http_server import Request, Response, error_response

NDJSON = "application/x-ndjson"


def tap_response(tap: Tap, request: Request) -> Response:
    """The live feed ``request`` asks for, or 400 (a bad filter) or 503 (taps enough)."""
    try:
        tap_filter = TapFilter.from_query(request.param)
    except TapFilterError as error:
        return error_response(400, f"tap: {error}")
    most_text = request.param("max") or "0"
    if not most_text.isdigit():
        return error_response(400, f"tap: max {most_text!r} is not a number of requests")
    subscriber = tap.subscribe(tap_filter)
    if subscriber is None:
        return error_response(
            503, f"tap: {MAX_SUBSCRIBERS} taps listen already; try again when one has ended"
        )
    feed = Feed(tap, subscriber, int(most_text))
    return Response(200, b"", {"content-type": NDJSON, "cache-control": "no-store"}, feed)
