"""TLS for the data plane: an ``ssl.SSLObject`` between two ``MemoryBIO``s, on a plain asyncio
transport. asyncio's TLS transport (and uvloop's) reserves 256 KiB per connection, and
``start_tls`` loses bytes already read (cpython#142352), so a port that peeks at the first byte
could not hand the ClientHello over. :class:`TlsProtocol` is the raw transport's protocol and
presents the plaintext to an inner protocol through a :class:`TlsTransport`. Both BIOs are fed
in slices of 8 KiB (a memory BIO keeps its high-water mark) and OpenSSL releases its record
buffers between records (CPython sets ``SSL_MODE_RELEASE_BUFFERS``): an idle connection holds
its session, keys and the peer's certificate, and little else. The peer's certificate is checked
by the context, then by the caller's ``verify_peer``; failures are short reasons, not logs."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Final, cast

from tulle.transport.tls_errors import OnRefused, TlsError, VerifyPeer, describe
from tulle.transport.tls_transport import CLOSED, CLOSING, HANDSHAKE, OPEN, TlsTransport

RECORD: Final = 16384
"""The largest TLS plaintext record: what one ``SSLObject.read`` asks for."""
FEED_SLICE: Final = 8192
"""Ciphertext written into the incoming BIO at once: its high-water mark."""

CLOSED_AFTER_HANDSHAKE: Final = (
    "server closed the connection after the handshake (certificate refused?)"
)


def _records_of(sslobj: ssl.SSLObject) -> ssl.SSLObject:
    """The object to read and write records with: the ``_ssl`` object an ``SSLObject`` wraps
    (CPython's ``ssl.SSLObject.read``, ``write`` and ``pending`` only pass their arguments on to
    it, in interpreted code: a Python frame and a method lookup per call, three calls per
    request and side), else the ``SSLObject`` itself. Same methods, same exceptions."""
    return cast(ssl.SSLObject, getattr(sslobj, "_sslobj", sslobj))


class TlsProtocol(asyncio.Protocol):
    """TLS over a raw asyncio transport, for an inner protocol: make one with :meth:`server` or
    :meth:`client` and give it to ``create_server``/``create_connection`` (or to
    ``transport.set_protocol`` and ``connection_made`` when the first bytes were read elsewhere).

    The inner protocol is made and connected only once the handshake and ``verify_peer``
    succeeded, so the peer's certificate is there from its first ``data_received``. It then gets
    each raw read's plaintext in one ``data_received``, ``eof_received`` on the peer's
    close_notify (or a TCP FIN), ``pause_writing``/``resume_writing`` from the socket, and
    ``connection_lost`` exactly once, with the reason if the connection failed."""

    __slots__ = (
        "_context", "_eof_forwarded", "_eof_seen", "_error", "_factory", "_handshake_timeout",
        "_incoming", "_inner", "_on_refused", "_outgoing", "_pending", "_provider", "_raw",
        "_read_paused", "_received", "_records", "_server_hostname", "_server_side", "_sslobj",
        "_state",
        "_timer", "_transport", "_verify_peer", "_waiter", "_write_closed", "_write_paused",
    )  # fmt: skip

    def __init__(
        self,
        server_side: bool,
        context: ssl.SSLContext | None,
        context_provider: Callable[[], ssl.SSLContext] | None,
        inner_factory: Callable[[], asyncio.Protocol],
        server_hostname: str | None = None,
        verify_peer: VerifyPeer | None = None,
        on_refused: OnRefused | None = None,
        initial: bytes = b"",
        handshake_timeout: float | None = None,
    ) -> None:
        self._server_side = server_side
        self._context = context
        self._provider = context_provider
        self._factory = inner_factory
        self._server_hostname = server_hostname
        self._verify_peer = verify_peer
        self._on_refused = on_refused
        self._pending = initial
        self._handshake_timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj: ssl.SSLObject | None = None
        # What reads and writes records once the connection is open: the C object under
        # ``_sslobj`` (see ``_records_of``).
        self._records: ssl.SSLObject | None = None
        self._raw: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._transport: TlsTransport | None = None
        self._waiter: asyncio.Future[asyncio.Protocol] | None = None
        self._state = HANDSHAKE
        self._read_paused = False
        self._write_paused = False
        self._write_closed = False  # our close_notify sent by a half-close (write_eof)
        self._eof_seen = False  # close_notify read
        self._eof_forwarded = False
        self._received = bool(initial)  # a server: during the handshake; a client: after it
        self._error: Exception | None = None

    @staticmethod
    def server(
        context_provider: Callable[[], ssl.SSLContext],
        inner_factory: Callable[[], asyncio.Protocol],
        on_handshake_failed: OnRefused | None = None,
        initial: bytes = b"",
        *,
        verify_peer: VerifyPeer | None = None,
        handshake_timeout: float | None = 10.0,
    ) -> TlsProtocol:
        """The server side of one connection. ``context_provider`` is asked for the context at
        the handshake (a rotated certificate serves new connections only); ``initial`` are bytes
        already read from the socket (a peeked ClientHello). A handshake that fails, times out
        or that ``verify_peer`` refuses closes the connection and is reported to
        ``on_handshake_failed(peername, reason)``; a peer that connects and closes without
        sending a byte (a TCP health check) is not."""
        return TlsProtocol(
            True,
            None,
            context_provider,
            inner_factory,
            verify_peer=verify_peer,
            on_refused=on_handshake_failed,
            initial=initial,
            handshake_timeout=handshake_timeout,
        )

    @staticmethod
    def client(
        context: ssl.SSLContext,
        inner_factory: Callable[[], asyncio.Protocol],
        server_hostname: str | None = None,
        verify_peer: VerifyPeer | None = None,
        *,
        handshake_timeout: float | None = None,
    ) -> TlsProtocol:
        """The client side of one connection (see :func:`open_tls_connection`, which waits for
        the handshake)."""
        return TlsProtocol(
            False,
            context,
            None,
            inner_factory,
            server_hostname=server_hostname,
            verify_peer=verify_peer,
            handshake_timeout=handshake_timeout,
        )

    @property
    def inner(self) -> asyncio.Protocol | None:
        """The inner protocol: from the end of the handshake until the connection is lost."""
        return self._inner

    # The raw transport's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        self._raw = raw
        try:
            context = self._context
            if context is None:
                assert self._provider is not None
                context = self._provider()
            self._sslobj = context.wrap_bio(
                self._incoming,
                self._outgoing,
                server_side=self._server_side,
                server_hostname=self._server_hostname,
            )
            self._records = _records_of(self._sslobj)
        except Exception as error:  # a provider without a certificate, a bad context
            self._fail_handshake(f"no TLS context: {describe(error)}", report=True)
            return
        if self._handshake_timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(
                self._handshake_timeout, self._handshake_timed_out
            )
        initial, self._pending = self._pending, b""
        if initial:
            self.data_received(initial)
        else:
            self._handshake()  # a client's ClientHello

    def data_received(self, data: bytes) -> None:
        if len(data) > FEED_SLICE:
            self._receive_slices(data)
            return
        state = self._state
        if state == OPEN:
            self._received = True
            self._incoming.write(data)
            if not self._read_paused:
                self._read_ready()
        elif state == HANDSHAKE:
            self._received = True
            self._incoming.write(data)
            self._handshake()
            if self._state == OPEN and not self._read_paused and self._readable():
                self._read_ready()

    def _receive_slices(self, data: bytes) -> None:
        """A large read, fed FEED_SLICE bytes at a time so that the incoming BIO stays
        small; its plaintext still reaches the inner protocol in one call."""
        self._received = True
        view = memoryview(data)
        size = len(data)
        parts: list[bytes] = []
        start = 0
        while start < size and self._state < CLOSING:
            self._incoming.write(view[start : start + FEED_SLICE])
            start += FEED_SLICE
            if self._state == HANDSHAKE:
                self._handshake()
                if self._state != OPEN:
                    continue
            if not self._read_paused:
                plain = self._decrypt()
                if plain:
                    parts.append(plain)
                if self._error is not None or self._eof_seen:
                    break  # what follows an error or close_notify is dropped
        self._deliver(b"".join(parts))

    def eof_received(self) -> bool | None:
        if self._state == HANDSHAKE:
            self._fail_handshake("connection closed during the handshake")
            return False
        if self._state == OPEN:  # a FIN without close_notify
            if not (self._server_side or self._received):
                # Under TLS 1.3 a server that refuses the client's certificate may just close
                # (asyncio's and uvloop's do, without the alert).
                self._error = TlsError(CLOSED_AFTER_HANDSHAKE)
                self._close()
            else:
                self._peer_eof()
        return self._state == OPEN

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        self._state = CLOSED
        self._cancel_timer()
        if state == HANDSHAKE:
            reason = "connection lost during the handshake"
            if exc is not None:
                reason += f": {describe(exc)}"
            if self._received or not self._server_side:
                self._report(reason)
            self._error = TlsError(reason)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._error or TlsError("connection closed during the handshake"))
        self._waiter = None
        inner = self._inner
        self._inner = None  # once; and no cycle left: inner -> transport -> this, nothing back
        self._transport = None
        if inner is not None:
            inner.connection_lost(exc if exc is not None else self._error)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._inner is not None:
            self._inner.resume_writing()

    # The handshake.

    def _handshake(self) -> None:
        sslobj = self._sslobj
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as error:
            self._flush()  # the alert, so that the peer learns why
            self._fail_handshake(describe(error))
            return
        self._flush()
        self._cancel_timer()
        if self._verify_peer is not None:
            try:
                self._verify_peer(sslobj.getpeercert(), sslobj.getpeercert(True))
            except Exception as error:
                self._send_close_notify()
                self._fail_handshake(describe(error))
                return
        self._state = OPEN
        if not self._server_side:
            self._received = self._readable()
        transport = TlsTransport(self)
        self._transport = transport
        inner = self._factory()
        self._inner = inner
        paused = self._write_paused  # the socket filled up during the handshake
        inner.connection_made(transport)
        if paused:
            inner.pause_writing()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(inner)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        assert self._handshake_timeout is not None
        self._fail_handshake(f"handshake timed out after {self._handshake_timeout:g}s", report=True)

    def _fail_handshake(self, reason: str, report: bool = False) -> None:
        """Close; tell on_refused why, unless a server's peer never sent a byte (a TCP health
        check) and ``report`` is not set."""
        if self._state >= CLOSING:
            return
        self._state = CLOSING
        self._cancel_timer()
        error = TlsError(reason)
        self._error = error
        if report or self._received or not self._server_side:
            self._report(reason)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self._raw is not None:
            self._raw.close()

    def _report(self, reason: str) -> None:
        on_refused = self._on_refused
        if on_refused is not None and self._raw is not None:
            on_refused(self._raw.get_extra_info("peername"), reason)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # Reading.

    def _read_ready(self) -> None:
        self._deliver(self._decrypt())

    def _readable(self) -> bool:
        """Records wait in the incoming BIO, or plaintext in OpenSSL."""
        records = self._records
        return self._incoming.pending > 0 or (records is not None and records.pending() > 0)

    def _decrypt(self) -> bytes:
        """What the incoming BIO holds, decrypted (close_notify sets ``_eof_seen``, a failure
        ``_error``)."""
        sslobj = self._records
        assert sslobj is not None
        incoming = self._incoming
        first = b""
        parts: list[bytes] | None = None
        while True:
            try:
                chunk = sslobj.read(RECORD)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify, after our own (a half-close)
                self._eof_seen = True
                break
            except ssl.SSLError as error:
                self._error = TlsError(describe(error))
                break
            if not chunk:  # close_notify
                self._eof_seen = True
                break
            if not first:
                first = chunk
            elif parts is None:
                parts = [first, chunk]
            else:
                parts.append(chunk)
            if not incoming.pending and not sslobj.pending():
                break  # nothing left: spare the read that would raise SSLWantReadError
        if self._outgoing.pending:  # a key update's answer, an alert
            self._flush()
        if parts is not None:
            return b"".join(parts)
        return first

    def _deliver(self, data: bytes) -> None:
        inner = self._inner
        if data and inner is not None and self._state == OPEN:
            inner.data_received(data)
        if self._error is not None:
            if self._state < CLOSING:
                self._state = CLOSING
                assert self._raw is not None
                self._raw.close()
        elif self._eof_seen and self._state == OPEN:
            self._peer_eof()

    def _peer_eof(self) -> None:
        """The peer will send no more: the inner protocol may keep the connection open for
        writing (by returning True from eof_received), else it is closed."""
        if self._eof_forwarded:
            return
        self._eof_forwarded = True
        inner = self._inner
        keep_open = False
        if inner is not None:
            keep_open = bool(inner.eof_received())
        if not keep_open:
            self._close()

    def _resume_delivery(self) -> None:
        if self._state == OPEN and not self._read_paused:
            self._read_ready()

    # Sending and closing (TlsTransport encrypts what the inner protocol writes).

    def _flush(self) -> None:
        outgoing = self._outgoing
        if outgoing.pending and self._raw is not None:
            self._raw.write(outgoing.read())

    def _send_close_notify(self) -> None:
        assert self._sslobj is not None
        # SSLWantReadError: ours is sent; the peer's need not be awaited.
        with contextlib.suppress(ssl.SSLError):
            self._sslobj.unwrap()
        self._flush()

    def _write_eof(self) -> None:
        """A half-close, as Envoy's TLS socket does one: our close_notify, then the socket's
        FIN; reading goes on until the peer closes its side (TLS 1.3 closes each direction on
        its own). Ciphertext already received but not read yet (reading paused) is kept out of
        the incoming BIO meanwhile: OpenSSL's shutdown would read it, and fail on application
        data after close_notify."""
        if self._state != OPEN or self._write_closed:
            return
        self._write_closed = True
        incoming = self._incoming
        unread = incoming.read() if incoming.pending else b""
        self._send_close_notify()
        if unread:
            incoming.write(unread)
        raw = self._raw
        if raw is not None and raw.can_write_eof():
            raw.write_eof()

    def _close(self) -> None:
        state = self._state
        if state >= CLOSING:
            return
        self._state = CLOSING
        if state == OPEN:
            self._send_close_notify()
        if self._raw is not None:
            self._raw.close()

    def _abort(self) -> None:
        self._state = max(self._state, CLOSING)
        if self._raw is not None:
            self._raw.abort()
