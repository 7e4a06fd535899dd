"""The access log: one JSON line per request on stdout, with the response flags and the reason
(the only per-request logging the proxy does). Lines are kept and written together a few times a
second (or every 256 lines), whatever buffering stdout has: one system call per line would cost
more than the rest of the entry."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import TextIO

from tulle.obs.views import RequestView, ResponseView

_encode = json.encoder.encode_basestring_ascii


_LINE = (
    '{"start_time":%.6f,"duration_ms":%.3f,"listener":"%s","method":%s,"authority":%s,'
    '"path":%s,"status":%d,"flags":"%s","reason":%s,"route":%s,"cluster":%s,"upstream":%s,'
    '"attempts":%d,"bytes_received":%d,"bytes_sent":%d,"request_id":%s,"source":%s}\n'
)


class AccessLog:
    """Writes entries to ``stream`` (stdout by default); ``enabled`` follows the Mesh setting."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self._flusher: asyncio.Task[None] | None = None
        self._lines: list[str] = []
        # The library records from whatever threads serve the app: the swap in flush() and the
        # appends take turns, so no line is lost between them.
        self._lock = threading.Lock()

    def start(self) -> None:
        """Flush every 200 ms."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.flush()

    def flush(self) -> None:
        """Write out the lines kept so far."""
        with self._lock:
            lines, self._lines = self._lines, []
            if lines:
                self.stream.write("".join(lines))
            self.stream.flush()

    def stop(self) -> None:
        """Flush and stop."""
        if self._flusher is not None:
            self._flusher.cancel()
        self.flush()

    def record(
        self, listener: str, request: RequestView, response: ResponseView, started: float, sent: int
    ) -> None:
        """One entry."""
        if not self.enabled:
            return
        # Built by hand, one format operation: json.dumps of a dict costs more than the rest of
        # the entry. Strings go through the JSON string encoder (null when empty).
        line = _LINE % (
            started, (time.time() - started) * 1000, listener,
            _encode(request.method), _encode(request.authority) if request.authority else "null",
            _encode(request.path),
            response.status, response.flag,
            _encode(response.reason) if response.reason else "null",
            _encode(response.route) if response.route else "null",
            _encode(response.cluster) if response.cluster else "null",
            _encode(response.upstream) if response.upstream else "null",
            response.attempts, request.body_size, sent,
            _encode(request_id) if (request_id := request.header("x-request-id")) else "null",
            _encode(request.source_ip) if request.source_ip else "null",
        )  # fmt: skip
        with self._lock:
            self._lines.append(line)
            full = len(self._lines) >= 256
        if full:
            self.flush()
