"""Where TLS connections start. A client's :func:`open_tls_connection` connects, completes the
handshake and the caller's peer check, and only then returns. A server port takes mTLS, plain
text or both (Istio's PeerAuthentication modes) with :class:`TlsOrPlain`, which tells them apart
on the first byte: a TLS connection starts with a handshake record (0x16), which no plain-text
protocol the mesh carries does. The bytes read to decide are handed to the protocol chosen, so
nothing is lost (as ``start_tls`` would, cpython#142352)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Final, Literal, TypeVar, cast

from tulle.transport.tls import TlsProtocol
from tulle.transport.tls_errors import OnRefused, VerifyPeer

MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
"""STRICT: TLS only (plain text is refused); PERMISSIVE: both; DISABLE: plain only (a
ClientHello is passed on as bytes, as Istio does)."""

TLS_HANDSHAKE_RECORD: Final = 0x16
PLAIN_REFUSED: Final = "plain text refused: STRICT mTLS"


class TlsOrPlain(asyncio.Protocol):
    """The raw transport's first protocol: waits for the first bytes, then hands the transport
    to a :class:`TlsProtocol` server (TLS) or straight to ``inner_factory()`` (plain text, with
    no wrapper in between), and drops out. The inner protocol tells the two apart with
    ``transport.get_extra_info("ssl_object")``. Refusals (plain text under STRICT, failed
    handshakes) close the connection and are told to ``on_refused(peername, reason)``."""

    __slots__ = (
        "_factory",
        "_first_bytes_timeout",
        "_handshake_timeout",
        "_mode",
        "_on_refused",
        "_provider",
        "_raw",
        "_timer",
        "_verify_peer",
    )

    def __init__(
        self,
        mode: MtlsMode,
        context_provider: Callable[[], ssl.SSLContext] | None,
        inner_factory: Callable[[], asyncio.Protocol],
        on_refused: OnRefused | None = None,
        *,
        verify_peer: VerifyPeer | None = None,
        first_bytes_timeout: float | None = 10.0,
        handshake_timeout: float | None = 10.0,
    ) -> None:
        if mode not in ("STRICT", "PERMISSIVE", "DISABLE"):
            raise ValueError(f"mTLS mode {mode!r} is not STRICT, PERMISSIVE or DISABLE")
        if context_provider is None and mode != "DISABLE":
            raise ValueError(f"mTLS mode {mode} needs a context provider")
        self._mode: str = mode
        self._provider = context_provider
        self._factory = inner_factory
        self._on_refused = on_refused
        self._verify_peer = verify_peer
        self._first_bytes_timeout = first_bytes_timeout
        self._handshake_timeout = handshake_timeout
        self._raw: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        if self._mode == "DISABLE":
            self._plain(raw, b"")
            return
        self._raw = raw
        if self._first_bytes_timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(
                self._first_bytes_timeout, raw.close
            )

    def data_received(self, data: bytes) -> None:
        raw = self._raw
        if not data or raw is None:
            return
        self._cancel_timer()
        if data[0] == TLS_HANDSHAKE_RECORD:
            assert self._provider is not None
            tls = TlsProtocol.server(
                self._provider,
                self._factory,
                self._on_refused,
                data,
                verify_peer=self._verify_peer,
                handshake_timeout=self._handshake_timeout,
            )
            raw.set_protocol(tls)
            tls.connection_made(raw)
        elif self._mode == "PERMISSIVE":
            self._plain(raw, data)
        else:
            if self._on_refused is not None:
                self._on_refused(raw.get_extra_info("peername"), PLAIN_REFUSED)
            raw.close()
        self._raw = None

    def _plain(self, raw: asyncio.Transport, data: bytes) -> None:
        inner = self._factory()
        raw.set_protocol(inner)
        inner.connection_made(raw)
        if data:
            inner.data_received(data)

    def eof_received(self) -> bool | None:
        return False  # closed before the first byte

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._raw = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


P = TypeVar("P", bound=asyncio.Protocol)


async def open_tls_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    host: str | None,
    port: int | None,
    context: ssl.SSLContext,
    *,
    sock: socket.socket | None = None,
    server_hostname: str | None = None,
    verify_peer: VerifyPeer | None = None,
    timeout: float = 10.0,
) -> P:
    """Connect to ``host:port`` (or over the connected socket ``sock``), complete the TLS
    handshake and ``verify_peer``, and return the inner protocol ``factory()`` made, already
    connected. ``server_hostname`` (sent as SNI) defaults to ``host`` when the context checks
    host names. Raises TlsError with the reason (the handshake's, or verify_peer's message),
    TimeoutError past ``timeout`` seconds, or the connect's OSError.

    Under TLS 1.3 the client's handshake ends before the server has checked the client's
    certificate: a refusal reaches the inner protocol later, as ``connection_lost(TlsError(
    "alert from peer: certificate required"))`` (or ``unknown ca``...), or, from a server that
    closes without its alert (asyncio's, uvloop's), as TlsError(CLOSED_AFTER_HANDSHAKE)."""
    if server_hostname is None and context.check_hostname:
        server_hostname = host
    tls = TlsProtocol.client(context, factory, server_hostname, verify_peer)
    waiter: asyncio.Future[asyncio.Protocol] = loop.create_future()
    tls._waiter = waiter
    try:
        async with asyncio.timeout(timeout):
            if sock is None:
                assert host is not None, "a host and port, or a connected sock"
                assert port is not None, "a host and port, or a connected sock"
                await loop.create_connection(lambda: tls, host, port)
            else:
                await loop.create_connection(lambda: tls, sock=sock)
            inner = await waiter
    except BaseException as error:
        tls._waiter = None
        waiter.cancel()
        tls._abort()
        if isinstance(error, TimeoutError):
            stage = "connect" if tls._raw is None else "TLS handshake"
            raise TimeoutError(f"{stage} timed out after {timeout:g}s") from None
        raise
    return cast(P, inner)
