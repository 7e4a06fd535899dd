"""A TCP connection as the access log and the TCP metrics record it: one record per connection
the sidecar takes on an opaque TCP port (or refuses before any byte reached the app), made when
the connection is accepted and finished when it closes, as Envoy's TCP proxy logs a connection
once, at its end. Its metric labels are resolved once per connection (:meth:`MeshMetrics.
tcp_open`), never per chunk of bytes piped."""

from __future__ import annotations


class TcpConnection:
    """One TCP connection. ``listener`` is ``inbound`` (a caller's connection to the app) or
    ``outbound`` (the app's connection out), ``reporter`` accordingly ``destination`` or
    ``source``; ``source`` the downstream's address; ``service`` and ``cluster`` where it goes
    (empty when it was refused before that was known), ``upstream`` the endpoint's
    ``address:port`` and ``upstream_workload`` its workload (outbound). ``peer_principal`` is
    the SPIFFE id the other side proved in its mTLS handshake: the caller's inbound, the
    upstream's outbound (empty over plain text). ``received`` counts the bytes read from the
    downstream, ``sent`` those written to it; ``flag`` and ``reason`` say why it ended early
    (``-`` and empty when the pipe ran until a side closed it). ``series`` is the metrics'
    resolved label set (set once, by the metrics)."""

    __slots__ = (
        "cluster", "ended", "flag", "listener", "peer_principal", "reason", "received",
        "reporter", "sent", "series", "service", "source", "started", "upstream",
        "upstream_workload",
    )  # fmt: skip

    def __init__(
        self,
        listener: str,
        started: float,
        source: str,
        service: str = "",
        cluster: str = "",
        upstream: str = "",
        upstream_workload: str = "",
        peer_principal: str = "",
    ) -> None:
        self.listener, self.started, self.source = listener, started, source
        self.reporter = "destination" if listener == "inbound" else "source"
        self.service, self.cluster, self.upstream = service, cluster, upstream
        self.upstream_workload, self.peer_principal = upstream_workload, peer_principal
        self.ended = started
        self.received = self.sent = 0
        self.flag, self.reason = "-", ""
        self.series: object | None = None
