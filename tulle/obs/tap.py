"""Live requests for ``tulle tap`` (as ``linkerd viz tap``): the sidecar and the library hand
every finished request's record (:class:`~tulle.obs.finished.Finished`, the one the access log
and the metrics already get) to :meth:`Tap.publish` when, and only when, ``Tap.active`` says a
tap is listening: with no tap, a request costs one attribute check. The engine hands over each
attempt it retries (:meth:`Tap.publish_retry`), so a tap shows the failed calls the mesh hid
behind a retry as well.

Each tap is a :class:`Subscriber` with its filters (:class:`TapFilter`), applied here, at the
source, and a bounded buffer: a subscriber that does not read in time loses events, counted in
``dropped`` (its own and the tap's total, which the metrics show as
``tulle_tap_events_dropped_total``: :class:`TapCollector`), and never slows or grows the
request path. Whoever
serves the tap (the sidecar's admin listener, the library's) drains the buffer off the request
path and formats the events (:func:`event`) as JSON lines (:class:`Feed`)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tulle.obs.finished import Finished

BUFFER: Final = 1000
"""Events a subscriber keeps unread; past that, new ones are dropped and counted."""
MAX_SUBSCRIBERS: Final = 8
"""Taps one process serves at once: each filters every request while it listens."""


class TapFilterError(ValueError):
    """A filter that cannot be applied; the message names the parameter."""


@dataclass(frozen=True)
class TapFilter:
    """Which requests a tap shows, as ``linkerd viz tap`` filters them: ``path`` a prefix,
    ``method`` and ``authority`` exact (case-insensitive for the method), ``status`` a code
    (``503``) or a class (``5xx``; status 0 is a request the mesh answered with no status, as
    a TCP-level failure or a client gone, and ``0`` selects those)."""

    path: str = ""
    method: str = ""
    authority: str = ""
    status: str = ""
    # The statuses ``status`` selects, low <= status < high (all when not given).
    low: int = field(default=0, init=False, repr=False)
    high: int = field(default=1000, init=False, repr=False)

    def __post_init__(self) -> None:
        status = self.status.lower()
        if status.isdigit() and len(status) <= 3:
            low, high = int(status), int(status) + 1
        elif len(status) == 3 and status[0] in "12345" and status[1:] == "xx":
            low = int(status[0]) * 100
            high = low + 100
        elif status:
            raise TapFilterError(
                f"status {self.status!r}: give a code (503) or a class (1xx to 5xx)"
            )
        else:
            low, high = 0, 1000
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "method", self.method.upper())
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def from_query(cls, get: Any) -> TapFilter:
        """From query parameters: ``get(name)`` returns one or None."""
        return cls(
            path=get("path") or "",
            method=get("method") or "",
            authority=get("authority") or "",
            status=get("status") or "",
        )

    def matches(self, done: Finished) -> bool:
        """Whether ``done`` passes every filter given."""
        if self.path and not done.path.startswith(self.path):
            return False
        if self.method and done.method != self.method:
            return False
        if self.authority and done.authority != self.authority:
            return False
        return self.low <= done.status < self.high


class Subscriber:
    """One tap: its filter, what it has not read yet (at most ``limit`` events), and how many
    it lost."""

    __slots__ = ("dropped", "events", "filter", "limit")

    def __init__(self, tap_filter: TapFilter, limit: int = BUFFER) -> None:
        self.filter = tap_filter
        self.limit = limit
        self.events: list[tuple[Finished, bool]] = []  # (record, a retried attempt)
        self.dropped = 0

    def take(self) -> list[tuple[Finished, bool]]:
        """The events kept so far, no longer kept (one added meanwhile waits for the next)."""
        events = self.events
        count = len(events)
        taken = events[:count]
        del events[:count]
        return taken


class Tap:
    """The taps of one sidecar or library process. ``active`` is what the request path checks;
    ``dropped`` counts the events every subscriber lost, since the start."""

    __slots__ = ("_lock", "active", "dropped", "subscribers")

    def __init__(self) -> None:
        self.active = False
        self.subscribers: tuple[Subscriber, ...] = ()  # replaced whole: read with no lock
        self.dropped = 0
        self._lock = threading.Lock()

    def subscribe(self, tap_filter: TapFilter, limit: int = BUFFER) -> Subscriber | None:
        """A new tap, or None when ``MAX_SUBSCRIBERS`` already listen."""
        with self._lock:
            if len(self.subscribers) >= MAX_SUBSCRIBERS:
                return None
            subscriber = Subscriber(tap_filter, limit)
            self.subscribers = (*self.subscribers, subscriber)
            self.active = True
            return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """The tap has ended."""
        with self._lock:
            self.subscribers = tuple(s for s in self.subscribers if s is not subscriber)
            self.active = bool(self.subscribers)

    def publish(self, done: Finished) -> None:
        """A finished request, for every tap whose filter it passes."""
        self._offer(done, False)

    def publish_retry(self, done: Finished) -> None:
        """An attempt that failed and was retried (its request goes on)."""
        self._offer(done, True)

    def _offer(self, done: Finished, retried: bool) -> None:
        for subscriber in self.subscribers:
            if not subscriber.filter.matches(done):
                continue
            events = subscriber.events
            if len(events) >= subscriber.limit:
                subscriber.dropped += 1
                self.dropped += 1
            else:
                events.append((done, retried))


def event(done: Finished, retried: bool = False) -> dict[str, Any]:
    """One tap event, as the tap's JSON line carries it. ``direction`` is ``inbound`` for a
    request the workload served, ``outbound`` for one it sent; ``src`` and ``dst`` are the
    caller's address and the upstream endpoint (outbound; the authority asked for when the mesh
    answered before choosing one, as a fault's abort) or the service served (inbound);
    ``tls`` whether the peer proved an identity over mTLS (``peer``, its SPIFFE id, else the
    workload a plain-text caller named); ``reason`` the mesh's own reason when the mesh made
    the failure; ``retried`` an attempt the mesh retried (``attempt`` its number)."""
    inbound = done.reporter == "destination"
    reason = done.reason
    return {
        "direction": "inbound" if inbound else "outbound",
        "start_time": round(done.started, 6),
        "src": done.source_ip,
        "dst": done.service if inbound else done.upstream or done.authority,
        "dst_workload": done.service if inbound else done.upstream_workload,
        "tls": bool(done.peer_principal),
        "peer": done.peer_principal or done.caller,
        "method": done.method,
        "authority": done.authority,
        "path": done.path,
        "status": done.status,
        "latency_ms": round((done.ended - done.started) * 1000, 3),
        "request_bytes": done.received,
        "response_bytes": done.sent,
        "flags": done.flag,
        "reason": reason or None,
        "route": done.route or None,
        "cluster": done.cluster or None,
        "attempt" if retried else "attempts": done.attempts,
        "retried": retried,
        "request_id": done.request_id or None,
    }


class Feed:
    """A subscriber's events as newline-delimited JSON, for a streaming response: every
    ``period`` seconds the events that came (nothing when none did: the server's chance to
    notice a client gone), a ``{"dropped": N}`` line when the count of events lost has grown,
    and the end after ``most`` events (0: never). Closing it ends the subscription."""

    def __init__(self, tap: Tap, subscriber: Subscriber, most: int = 0, period: float = 0.1):
        self.tap, self.subscriber, self.most, self.period = tap, subscriber, most, period
        self.sent = 0
        self.dropped = 0
        self.started = False
        self.closed = False

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> bytes:
        most = self.most
        if self.closed or (most and self.sent >= most):
            await self.aclose()
            raise StopAsyncIteration
        if self.started:
            await asyncio.sleep(self.period)
        self.started = True
        subscriber = self.subscriber
        lines = []
        for done, retried in subscriber.take():
            if most and self.sent >= most:
                break
            lines.append(json.dumps(event(done, retried)))
            self.sent += 1
        if subscriber.dropped != self.dropped:
            self.dropped = subscriber.dropped
            lines.append(json.dumps({"dropped": self.dropped}))
        return ("\n".join(lines) + "\n").encode() if lines else b""

    async def aclose(self) -> None:
        """The client has gone, or the feed has ended: unsubscribe."""
        if not self.closed:
            self.closed = True
            self.tap.unsubscribe(self.subscriber)


class TapCollector(Collector):
    """``tulle_tap_events_dropped_total``: the events taps lost (each listening tap counts its
    own), for the process's metrics registry."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "tulle_tap_events_dropped",
            "Requests a listening tulle tap did not get: it read too slowly (its buffer was full)",
        )
        family.add_metric([], self.tap.dropped)
        yield family
