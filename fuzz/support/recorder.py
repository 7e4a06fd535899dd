"""A recorder for the front-end targets: it counts what the front end records for each
request (a response, or the client gone), which must be exactly once, and keeps nothing else
(a fuzzed authority or path would otherwise grow the metrics without bound)."""

from __future__ import annotations

import io

from tulle.engine.message import Request, Response
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.proxy.recording import Destination, Recorder


class CountingRecorder(Recorder):
    """Counts records per request (by identity)."""

    def __init__(self) -> None:
        super().__init__(AccessLog(io.StringIO()), MeshMetrics("fuzz"))
        self.counts: dict[int, int] = {}

    def count(self, request: Request) -> int:
        """How many times ``request`` was recorded."""
        return self.counts.get(id(request), 0)

    def record(
        self,
        listener: str,
        request: Request,
        response: Response,
        started: float,
        sent: int,
        destination: Destination = None,
    ) -> None:
        self.counts[id(request)] = self.count(request) + 1

    def client_gone(
        self, listener: str, request: Request, started: float, reason: str, destination: Destination
    ) -> None:
        self.counts[id(request)] = self.count(request) + 1
