"""The access log: one JSON line per request on stdout, with the response flags and the reason
(the only per-request logging the proxy does). Flushed a few times a second, not per line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

from tulle.engine.message import Request, Response


class AccessLog:
    """Writes entries to ``stream`` (stdout by default); ``enabled`` follows the Mesh setting."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Flush every 200 ms."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.stream.flush()

    def stop(self) -> None:
        """Flush and stop."""
        if self._flusher is not None:
            self._flusher.cancel()
        self.stream.flush()

    def record(
        self, listener: str, request: Request, response: Response, started: float, sent: int
    ) -> None:
        """One entry."""
        if not self.enabled:
            return
        entry = {
            "start_time": round(started, 6),
            "duration_ms": round((time.time() - started) * 1000, 3),
            "listener": listener,
            "method": request.method,
            "authority": request.authority,
            "path": request.path,
            "status": response.status,
            "flags": response.flag,
            "reason": response.reason or None,
            "route": response.route or None,
            "cluster": response.cluster or None,
            "upstream": response.upstream or None,
            "attempts": response.attempts,
            "bytes_received": len(request.body),
            "bytes_sent": sent,
            "request_id": request.header("x-request-id"),
            "source": request.source_ip or None,
        }
        self.stream.write(json.dumps(entry, separators=(",", ":")) + "\n")
