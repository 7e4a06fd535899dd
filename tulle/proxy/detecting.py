"""A front end that looks at a connection's first bytes: HTTP/2 with prior knowledge (gRPC)
goes to the HTTP/2 front end, everything else to the HTTP/1.1 one, which then becomes the
transport's protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from tulle.codec.detect import detect
from tulle.proxy.h2_front import H2Front
from tulle.proxy.http_front import DRAIN_IDLE, Http1Front
from tulle.proxy.in_flight import InFlight
from tulle.proxy.recording import Destination
from tulle.transport.interception import original_destination

Front = Http1Front | H2Front


class DetectingFront(asyncio.Protocol):
    """Decides the protocol on the first bytes, then hands the connection over."""

    def __init__(
        self,
        http1: Callable[[], Http1Front],
        http2: Callable[[Destination], H2Front],
        in_flight: InFlight,
        transparent: bool = False,
        header_timeout: float = 10.0,
    ) -> None:
        self.make_http1 = http1
        self.make_http2 = http2
        self.in_flight = in_flight
        self.transparent = transparent
        self.transport: asyncio.Transport | None = None
        self.front: Front | None = None
        self.buffered = b""
        self.since = time.monotonic()
        self.header_timeout = header_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.in_flight.opened(self)  # until the front end it picks takes over

    def drain(self) -> None:
        """The proxy is draining: close unless the first bytes come within DRAIN_IDLE seconds
        (the front end they pick is told to drain as it opens)."""
        asyncio.get_running_loop().call_later(DRAIN_IDLE, self._close_if_idle)

    def expire(self, now: float) -> None:
        """A connection whose first bytes do not come within the header timeout is closed
        (the front end it picks keeps its own timeouts)."""
        if self.front is None and now - self.since > self.header_timeout:
            self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.front is None and self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.front is not None:
            self.front.data_received(data)
            return
        self.buffered += data
        protocol = detect(self.buffered)
        if protocol is None or self.transport is None:
            return
        if protocol == "h2":
            destination = None
            if self.transparent:
                destination = original_destination(self.transport.get_extra_info("socket"))
            self.front = self.make_http2(destination)
        else:
            self.front = self.make_http1()
        self.in_flight.closed(self)
        self.front.connection_made(self.transport)
        # From here on the transport calls the front end itself: no hop through this object.
        self.transport.set_protocol(self.front)
        data, self.buffered = self.buffered, b""
        self.front.data_received(data)

    def eof_received(self) -> bool | None:
        if isinstance(self.front, Http1Front):
            return self.front.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.front is not None:
            self.front.connection_lost(exc)
        else:
            self.in_flight.closed(self)

    def pause_writing(self) -> None:
        if self.front is not None:
            self.front.pause_writing()

    def resume_writing(self) -> None:
        if self.front is not None:
            self.front.resume_writing()
