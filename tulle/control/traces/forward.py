"""The trace store's relay to an OTLP/gRPC collector: when the ``Mesh`` names one
(``tracing.otlp`` with ``protocol: grpc``), every export the store takes is also sent on to it,
over gRPC (``TraceService/Export``), as an OpenTelemetry Collector's ``otlp`` exporter would.

The data plane speaks OTLP/HTTP only (it loads no grpcio); the control plane, which serves gRPC
already, is where OTLP/gRPC leaves the mesh. Relaying never slows the store: an export is queued
(at most :data:`QUEUE_EXPORTS`; past that the oldest waiting export is dropped and counted) and a
task of its own sends them one at a time, each with a deadline. A failed send is counted and
logged (at most once a minute) and not retried: the spans are still in the store. The collector
is read from the config for each send, so a new ``Mesh`` takes effect at once; ``http://`` is
plain text, ``https://`` TLS verified with the system's roots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter

from tulle.control.traces.otlp_messages import EXPORT_METHOD

log = logging.getLogger(__name__)

EXPORT: Final = EXPORT_METHOD
QUEUE_EXPORTS: Final = 256
TIMEOUT: Final = 5.0
WARN_EVERY: Final = 60.0


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """``host:port`` of an OTLP/gRPC endpoint URL and whether it is TLS (``https``); the port
    defaults to OTLP/gRPC's 4317."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"OTLP/gRPC endpoint {endpoint!r}: not an http:// or https:// URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 4317}", parts.scheme == "https"


class OtlpForwarder:
    """Sends the store's exports on to the collector ``collector()`` names (None: nowhere)."""

    def __init__(
        self,
        collector: Callable[[], str | None],
        registry: CollectorRegistry,
        queue_size: int = QUEUE_EXPORTS,
        timeout: float = TIMEOUT,
    ) -> None:
        self.collector = collector
        self.timeout = timeout
        self._queue: deque[tuple[str, Message, int]] = deque(maxlen=queue_size)
        self._ready = asyncio.Event()
        self._channel: tuple[str, grpc.aio.Channel] | None = None
        self._task: asyncio.Task[None] | None = None
        self._warned = 0.0
        self.spans = Counter(
            "tulle_trace_forwarded_spans",
            "Spans the trace store sent on to the Mesh's OTLP/gRPC collector, by result "
            "(sent, failed, dropped: the relay's queue was full).",
            ["result"],
            registry=registry,
        )

    def offer(self, request: Message, spans: int) -> None:
        """Queue ``request`` (of ``spans`` spans) for the collector, if the config names one;
        never waits."""
        endpoint = self.collector()
        if not endpoint:
            return
        if len(self._queue) == self._queue.maxlen:
            self.spans.labels("dropped").inc(self._queue[0][2])
        self._queue.append((endpoint, request, spans))
        self._ready.set()

    def start(self) -> None:
        """Start the sending task (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sending (what is queued is dropped) and close the channel."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel[1].close()
            self._channel = None

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                endpoint, request, spans = self._queue.popleft()
                await self._send(endpoint, request, spans)

    async def _send(self, endpoint: str, request: Message, spans: int) -> None:
        try:
            channel = await self._channel_to(endpoint)
            call = channel.unary_unary(EXPORT)
            await call(request.SerializeToString(), timeout=self.timeout)
        except (grpc.aio.AioRpcError, ValueError) as error:
            self.spans.labels("failed").inc(spans)
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY:
                self._warned = now
                reason = error.details() if isinstance(error, grpc.aio.AioRpcError) else error
                code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "bad"
                log.warning("OTLP collector %s refused %d spans: %s %s (dropped; the trace "
                            "store keeps them)", endpoint, spans, code, reason)  # fmt: skip
            return
        self.spans.labels("sent").inc(spans)

    async def _channel_to(self, endpoint: str) -> grpc.aio.Channel:
        if self._channel is not None and self._channel[0] == endpoint:
            return self._channel[1]
        if self._channel is not None:
            await self._channel[1].close()
            self._channel = None
        target, tls = grpc_target(endpoint)
        if tls:
            channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
        else:
            channel = grpc.aio.insecure_channel(target)
        self._channel = (endpoint, channel)
        return channel
