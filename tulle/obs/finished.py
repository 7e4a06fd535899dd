"""A finished request as the access log and the metrics record it, read once from the engine's
request and response (obs does not import the engine, which sits above it). Both keep it until
their next batch."""

from __future__ import annotations

from tulle.obs.tracing import Span


class Finished:
    """One request answered: what the access log writes and the metrics count. ``received`` and
    ``sent`` are body bytes from and to the client; ``started`` and ``ended`` wall-clock
    seconds. ``reporter`` is ``"source"`` for a request the workload sent, ``"destination"``
    for one it served as ``service``. ``peer_principal`` is the SPIFFE id the other side proved
    in the mTLS handshake of the connection the request went over (the caller's when served,
    the upstream's when sent; empty over plain text). ``caller`` is the workload a plain-text
    caller says it is (the ``x-tulle-source-workload`` header): over mTLS it is not read, as
    the caller's certificate says who it is. ``span`` is the request's trace span when it was
    sampled (:mod:`tulle.obs.tracing`), else None."""

    # A plain class, not a dataclass: compiled, a dataclass's __init__ stays interpreted, and
    # one of these is made per request.
    __slots__ = (
        "attempts", "authority", "caller", "cluster", "ended", "flag", "listener", "method",
        "path", "peer_principal", "reason", "received", "reporter", "request_id", "route", "sent",
        "service", "source_ip", "span", "started", "status", "upstream", "upstream_workload",
    )  # fmt: skip

    def __init__(
        self,
        listener: str,
        method: str,
        authority: str,
        path: str,
        source_ip: str,
        request_id: str,
        received: int,
        status: int,
        flag: str,
        reason: str,
        route: str,
        cluster: str,
        upstream: str,
        upstream_workload: str,
        attempts: int,
        sent: int,
        started: float,
        ended: float,
        reporter: str = "source",
        caller: str = "",
        service: str = "",
        peer_principal: str = "",
    ) -> None:
        self.listener, self.method, self.authority, self.path = listener, method, authority, path
        self.source_ip, self.request_id, self.received = source_ip, request_id, received
        self.status, self.flag, self.reason, self.route = status, flag, reason, route
        self.cluster, self.upstream, self.upstream_workload = cluster, upstream, upstream_workload
        self.attempts, self.sent, self.started, self.ended = attempts, sent, started, ended
        self.reporter, self.caller, self.service = reporter, caller, service
        self.peer_principal = peer_principal
        self.span: Span | None = None
