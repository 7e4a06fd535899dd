"""The access log: one line per request on stdout (JSON, or Envoy-style text as the Mesh's
``accessLog.format`` says, :mod:`tulle.obs.access_text`), with the response flags and the reason
(the only per-request logging the proxy does), and ``peer_principal``: the SPIFFE id the other
side proved over mTLS (the caller of a request served, the upstream of one sent; null over plain
text). A request's :class:`Finished` record is kept;
entries are formatted and written together a few times a second (or every ``BATCH`` entries,
see :mod:`tulle.obs.pending`), whatever buffering stdout has. Both halves are for speed: one
system call per line would cost more than the rest of the entry, and formatting a batch in one
go costs half what formatting each line among the rest of its request's work does (measured:
4.5 against 9 µs per request). A batch is small for memory: 256 entries cost the sidecar 0.5 MB
more RSS than 64, at no measurable speed.

A TCP connection on an opaque port has one entry when it ends (:class:`TcpConnection`, as
Envoy's TCP proxy logs a connection), and so does one refused before any byte reached the app
(by the port's mTLS mode or its AuthorizationPolicy) or whose upstream could not be opened: the
same keys as a request's entry, the HTTP-only ones null (``status`` 0, as Envoy's
``%RESPONSE_CODE%`` for TCP), plus ``"protocol":"tcp"`` and the ``service``. Such an entry is
formatted when its connection ends (one per connection, not per request) and written with the
next batch."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Final, TextIO

from tulle.obs.access_text import text_line, text_tcp_line
from tulle.obs.connection import TcpConnection
from tulle.obs.finished import Finished
from tulle.obs.pending import BATCH, Pending

_encode: Final = json.encoder.encode_basestring_ascii

_LINE: Final = (
    '{"start_time":%.6f,"duration_ms":%.3f,"listener":"%s","method":%s,"authority":%s,'
    '"path":%s,"status":%d,"flags":"%s","reason":%s,"route":%s,"cluster":%s,"upstream":%s,'
    '"attempts":%d,"bytes_received":%d,"bytes_sent":%d,"request_id":%s,"source":%s,'
    '"peer_principal":%s}\n'
)
_TCP_LINE: Final = (
    '{"start_time":%.6f,"duration_ms":%.3f,"listener":"%s","method":null,"authority":null,'
    '"path":null,"status":0,"flags":"%s","reason":%s,"route":null,"cluster":%s,"upstream":%s,'
    '"attempts":%d,"bytes_received":%d,"bytes_sent":%d,"request_id":null,"source":%s,'
    '"peer_principal":%s,"protocol":"tcp","service":%s}\n'
)


class AccessLog:
    """Writes entries to ``stream`` (stdout by default); ``enabled`` and ``text`` (Envoy-style
    text lines instead of JSON) follow the Mesh's ``accessLog`` (``configure``)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.text = False
        self._flusher: asyncio.Task[None] | None = None
        self._entries = Pending()
        self._tcp_lines: list[str] = []  # TCP connections' entries, formatted
        self._flushing = threading.Lock()  # one flush at a time

    def start(self) -> None:
        """Flush every 200 ms."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.flush()

    def flush(self) -> None:
        """Write out the entries kept so far."""
        with self._flushing:
            entries = self._entries.take()
            lines = self._tcp_lines
            count = len(lines)
            if count:
                self.stream.write("".join(lines[:count]))
                del lines[:count]
            if entries:
                line = text_line if self.text else _line
                self.stream.write("".join([line(done) for done in entries]))
            self.stream.flush()

    def configure(self, enabled: bool, text: bool) -> None:
        """The Mesh's setting, as config brings it: what is kept already is written first, in
        the format it was recorded under."""
        if (enabled, text) != (self.enabled, self.text):
            self.flush()
            self.enabled, self.text = enabled, text

    def stop(self) -> None:
        """Flush and stop."""
        if self._flusher is not None:
            self._flusher.cancel()
        self.flush()

    def record(self, done: Finished) -> None:
        """One entry."""
        if self.enabled and self._entries.add(done):
            self.flush()

    def record_tcp(self, connection: TcpConnection) -> None:
        """One TCP connection's entry (it has ended, or was refused)."""
        if self.enabled:
            self._tcp_lines.append(
                text_tcp_line(connection) if self.text else _tcp_line(connection)
            )
            if len(self._tcp_lines) >= BATCH:
                self.flush()


def _line(done: Finished) -> str:
    """An entry's JSON line."""
    # Built by hand, one format operation: json.dumps of a dict costs more than the rest of
    # the entry. Strings go through the JSON string encoder (null when empty).
    started, request_id, source = done.started, done.request_id, done.source_ip
    reason, route, cluster, upstream = done.reason, done.route, done.cluster, done.upstream
    authority, peer = done.authority, done.peer_principal
    return _LINE % (
        started, (done.ended - started) * 1000, done.listener, _encode(done.method),
        _encode(authority) if authority else "null", _encode(done.path), done.status, done.flag,
        _encode(reason) if reason else "null", _encode(route) if route else "null",
        _encode(cluster) if cluster else "null", _encode(upstream) if upstream else "null",
        done.attempts, done.received, done.sent, _encode(request_id) if request_id else "null",
        _encode(source) if source else "null", _encode(peer) if peer else "null",
    )  # fmt: skip


def _tcp_line(done: TcpConnection) -> str:
    """A TCP connection's JSON line."""
    started, reason, cluster, upstream = done.started, done.reason, done.cluster, done.upstream
    source, peer, service = done.source, done.peer_principal, done.service
    return _TCP_LINE % (
        started, (done.ended - started) * 1000, done.listener, done.flag,
        _encode(reason) if reason else "null", _encode(cluster) if cluster else "null",
        _encode(upstream) if upstream else "null", 1 if upstream else 0, done.received,
        done.sent, _encode(source) if source else "null", _encode(peer) if peer else "null",
        _encode(service) if service else "null",
    )  # fmt: skip
