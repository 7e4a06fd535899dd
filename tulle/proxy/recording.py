"""What the proxy records once a request is done with and its response written: the access-log
entry and the request's metrics (as the caller's, or for inbound as the app's), both with the
bytes actually sent and the time to the response's last byte; and, while a ``tulle tap``
listens, the tap's event."""

from __future__ import annotations

import time
from collections.abc import Callable

from tulle.engine.message import Request, Response, finished
from tulle.engine.trace_setup import WorkloadTracing
from tulle.obs.access_log import AccessLog
from tulle.obs.metrics import MeshMetrics
from tulle.obs.tap import Tap

Destination = tuple[str, int] | None  # where the app sent a redirected connection


class Recorder:
    """Access log and metrics for one kind of listener: outbound (the app calls out), or
    inbound (``serving`` names the app's service the request reached)."""

    def __init__(
        self,
        log: AccessLog,
        metrics: MeshMetrics,
        serving: Callable[[Destination], str] | None = None,
        tap: Tap | None = None,
    ) -> None:
        self.log = log
        self.metrics = metrics
        self.serving = serving
        self.tap = tap if tap is not None else Tap()
        self.traces: WorkloadTracing | None = None  # where sampled requests' spans go

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
        """One finished request: ``started`` is its wall-clock start, ``sent`` the body bytes
        written to the client, ``ended`` when its last bytes were handed to the connection
        (0: now). Taken before that write, a served request's end comes before its caller
        can have read the answer: a server span ends within its client span, whatever the
        machine's load does to when each process gets to record."""
        service = None if self.serving is None else self.serving(destination)
        ended = ended or time.time()
        done = finished(listener, request, response, started, ended, sent, service)
        self.log.record(done)
        self.metrics.record(done)
        tap = self.tap
        if tap.active:
            tap.publish(done)
        if done.span is not None and self.traces is not None:
            self.traces.record(done)

    def client_gone(
        self, listener: str, request: Request, started: float, reason: str, destination: Destination
    ) -> None:
        """A request whose client went away before its answer (cancelled): status 0, ``DC``."""
        gone = Response(0, [], b"", flag="DC", reason=reason)
        self.record(listener, request, gone, started, 0, destination)
