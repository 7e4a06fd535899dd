"""Opaque TCP: bytes copied both ways between the app's connection and an upstream one, with
back-pressure (a side that cannot keep up pauses the other's reading) and half-closes passed on.
The upstream connection is mutual TLS to an endpoint in the mesh (its ``EndpointSpec.tls``, as
for HTTP: the same certificate, the same check of the server's identity, and no connection at
all without a valid certificate), plain text to one outside it; either side may be a TLS
transport (the inbound side's, behind the sidecar's mTLS gate)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import cast

from tulle.engine.cluster_config import EndpointSpec
from tulle.engine.message import UpstreamError
from tulle.transport.mtls import MeshTls, open_mesh_upstream


class _Half(asyncio.Protocol):
    """One side of a pipe: what it receives is written to ``peer``."""

    def __init__(self, pipe: TcpPipe, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.pipe.forward(self.name, data)

    def eof_received(self) -> bool:
        self.pipe.half_close(self.name)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.close()

    def pause_writing(self) -> None:
        self.pipe.pause(self.name)

    def resume_writing(self) -> None:
        self.pipe.resume(self.name)


class TcpPipe:
    """Copies bytes between ``downstream`` (the app) and an upstream connection it opens;
    ``on_close`` is told once when it closes (its byte counts and ``failure`` say how it
    went)."""

    def __init__(
        self,
        downstream: asyncio.Transport,
        mark: int | None,
        on_close: Callable[[TcpPipe], None] | None = None,
    ) -> None:
        self.on_close = on_close
        self.downstream = downstream
        self.upstream: asyncio.Transport | None = None
        self.mark = mark
        self.pending: list[bytes] = []
        self.closed = False
        self.bytes_up = 0
        self.bytes_down = 0
        self.ended: set[str] = set()
        self.failure: UpstreamError | None = None  # why the upstream could not be opened

    async def connect(
        self, endpoint: EndpointSpec, mtls: MeshTls | None = None, timeout: float = 10.0
    ) -> UpstreamError | None:
        """Open the upstream side (mutual TLS with ``mtls`` when ``endpoint.tls`` says the
        endpoint is in the mesh); anything the app sent meanwhile follows. Returns why the
        upstream could not be reached (refused, timed out, the handshake or the server's
        identity refused, no valid workload certificate), and then closes the app's side."""
        self.downstream.pause_reading()
        try:
            half = await open_mesh_upstream(
                lambda: _Half(self, "up"), endpoint, timeout, self.mark, mtls
            )
        except UpstreamError as failure:
            self.failure = failure
            self.close()
            return failure
        transport = half.transport
        assert transport is not None
        if self.closed:  # the app went away during the connect
            transport.close()
            return None
        self.upstream = transport
        for data in self.pending:
            self.upstream.write(data)
        self.pending.clear()
        if "down" in self.ended and transport.can_write_eof():
            transport.write_eof()  # the app half-closed during the connect
        self.downstream.resume_reading()
        return None

    def adopt(self, upstream: asyncio.Transport) -> None:
        """Use an upstream connection already open (one that switched protocols): what it
        receives from now on comes to this pipe."""
        half = _Half(self, "up")
        half.transport = upstream
        upstream.set_protocol(half)
        self.upstream = upstream
        for data in self.pending:
            upstream.write(data)
        self.pending.clear()

    def forward(self, side: str, data: bytes) -> None:
        """Bytes from ``side`` ("down" or "up") to the other."""
        if side == "down":
            self.bytes_up += len(data)
            if self.upstream is None:
                self.pending.append(data)
            else:
                self.upstream.write(data)
        else:
            self.bytes_down += len(data)
            self.downstream.write(data)

    def half_close(self, side: str) -> None:
        """One side finished sending: pass the EOF on; when both have, the pipe is done."""
        self.ended.add(side)
        if len(self.ended) == 2:
            self.close()
            return
        target = self.upstream if side == "down" else self.downstream
        if target is not None and target.can_write_eof():
            with contextlib.suppress(OSError):
                target.write_eof()

    def pause(self, side: str) -> None:
        """``side`` cannot write fast enough: stop reading from the other."""
        other = self.upstream if side == "down" else self.downstream
        if other is not None:
            other.pause_reading()

    def resume(self, side: str) -> None:
        """``side`` caught up."""
        other = self.upstream if side == "down" else self.downstream
        if other is not None and not self.closed:
            other.resume_reading()

    def close(self) -> None:
        """Close both sides."""
        if self.closed:
            return
        self.closed = True
        self.downstream.close()
        if self.upstream is not None:
            self.upstream.close()
        if self.on_close is not None:
            self.on_close(self)
