"""What the front ends allow a client, in one place: how long a request's head may take and how
long a connection may sit idle (as Envoy's ``request_headers_timeout`` and ``idle_timeout``,
HAProxy's ``timeout http-request`` and nginx's ``client_header_timeout``), how paths are
normalized, and the HTTP/2 limits that keep a hostile client from making the proxy work or
buffer without bound. One object per proxy, shared by every connection; the control plane's
config may change ``paths`` while connections are open."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tulle.codec.paths import BASE, PathNormalization

# Response bodies and request bodies held for a slow reader, per stream (HTTP/2) or per
# connection (HTTP/1.1), before the other side is paused: Envoy's 1 MiB buffer watermark.
BUFFER_WATERMARK = 1024 * 1024


@dataclass
class FrontLimits:
    """The limits of one proxy's listeners (see the module)."""

    header_timeout: float = 10.0  # seconds from a request's first byte to the end of its head
    idle_timeout: float = 60.0  # seconds a connection may stay with no request in progress
    paths: PathNormalization = field(default_factory=lambda: BASE)
    # HTTP/2 (RFC 9113 and the floods of CVE-2019-9512..9518 and CVE-2023-44487):
    max_concurrent_streams: int = 100
    # A client that resets more than half of its streams before their answers, once it has
    # opened this many, is told to calm down (GOAWAY ENHANCE_YOUR_CALM), as Envoy does.
    premature_reset_streams: int = 500
    # Control frames (PING, SETTINGS) that want an answer, taken while the client is not
    # reading what the proxy already has for it: more and the connection is closed (Envoy's
    # max_outbound_control_frames).
    max_unread_control_frames: int = 1000
    # Response bytes an HTTP/2 connection may hold for a client that does not read before
    # its new streams are refused (each stream's own is BUFFER_WATERMARK).
    connection_buffer: int = 4 * BUFFER_WATERMARK
    # A clock for the timeouts, read per request and advanced by the proxy's sweep each
    # second (``tick``): a second's precision is plenty for them, and an attribute read is
    # cheaper than a clock call on the hot path.
    now: float = field(default_factory=time.monotonic)

    def tick(self) -> float:
        """Advance ``now`` to the clock's time; it."""
        self.now = time.monotonic()
        return self.now
