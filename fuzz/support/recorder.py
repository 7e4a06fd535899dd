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
        # Every request recorded stays referenced: a request freed while the input runs would
        # leave its id to the next one made, which would then seem recorded already.
        self.kept: list[Request] = []

    def count(self, request: Request) -> int:
        """How many times ``request`` was recorded."""
        return self.counts.get(id(request), 0)

    def _add(self, request: Request) -> None:
        self.kept.append(request)
        self.counts[id(request)] = self.count(request) + 1

    def record(
        self,
        listener: str,
        request: Request,
        response: Response,
        started: float,
        sent: int,
        destination: Destination = None,
        ended: float = 0.0,
    ) -> None:
        self._add(request)

    def client_gone(
        self, listener: str, request: Request, started: float, reason: str, destination: Destination
    ) -> None:
        self._add(request)
