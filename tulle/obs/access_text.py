"""The access log's text lines (the Mesh's ``accessLog.format: TEXT``), in the shape of Envoy's
default format, the one Istio's ``meshConfig.accessLogEncoding: TEXT`` prints::

    [2026-12-06T14:03:01.123Z] "GET /cart" 200 - "-" 0 1234 3.052 1 "req-id" "cart:8080"
    "10.0.0.7:8080" "outbound|8080||cart.default.svc.cluster.local" "cart" http_proxy
    "10.0.0.9" "spiffe://cluster.local/ns/default/sa/cart"

(one line): start time (UTC), method and path, status, response flags, the mesh's reason,
bytes received and sent, duration in ms, attempts, request id, authority, upstream endpoint,
cluster, route, listener, the downstream address and the peer's principal. A TCP connection's
line has ``TCP`` for the method and path and its service last. Every field that carries
text (a request's, or config's) is written as a JSON string (quoted; quotes, control
characters and non-ASCII escaped), so no request can forge a line or a field; an empty one is
``"-"``, as Envoy writes it."""

from __future__ import annotations

import json
import time
from typing import Final

from tulle.obs.connection import TcpConnection
from tulle.obs.finished import Finished

_quote: Final = json.encoder.encode_basestring_ascii
_DASH: Final = '"-"'

_LINE: Final = '[%s] "%s %s" %d %s %s %d %d %.3f %d %s %s %s %s %s %s %s %s\n'
_TCP_LINE: Final = '[%s] "TCP" 0 %s %s %d %d %.3f %d "-" "-" %s %s - %s %s %s %s\n'


def _time(seconds: float) -> str:
    """``seconds`` since the epoch as Envoy's %START_TIME%: ISO 8601, UTC, milliseconds."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (
        f".{int((seconds - whole) * 1000):03d}Z"
    )


def _text(value: str) -> str:
    return _quote(value) if value else _DASH


def _bare(value: str) -> str:
    """A field of the sidecar's own names (the listener): unquoted."""
    return value if value else "-"


def text_line(done: Finished) -> str:
    """A request's text line."""
    started = done.started
    method = _quote(done.method)[1:-1]
    path = _quote(done.path)[1:-1]
    return _LINE % (
        _time(started), method, path, done.status, done.flag, _text(done.reason),
        done.received, done.sent, (done.ended - started) * 1000, done.attempts,
        _text(done.request_id), _text(done.authority), _text(done.upstream),
        _text(done.cluster), _text(done.route), _bare(done.listener), _text(done.source_ip),
        _text(done.peer_principal),
    )  # fmt: skip


def text_tcp_line(done: TcpConnection) -> str:
    """A TCP connection's text line."""
    started = done.started
    return _TCP_LINE % (
        _time(started), done.flag, _text(done.reason), done.received, done.sent,
        (done.ended - started) * 1000, 1 if done.upstream else 0, _text(done.upstream),
        _text(done.cluster), _bare(done.listener), _text(done.source),
        _text(done.peer_principal), _text(done.service),
    )  # fmt: skip
