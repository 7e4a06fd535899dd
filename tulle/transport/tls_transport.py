"""The transport the inner protocol of a :class:`~tulle.transport.tls.TlsProtocol` sees. What the
inner protocol writes is encrypted here, a record of at most WRITE_SLICE bytes at a time, onto
the raw transport; reading, closing and the connection's state are the TlsProtocol's."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, cast

from tulle.transport.tls_errors import TlsError, describe

SNI_ATTRIBUTE: Final = "tulle_sni"


def keep_sni(sslobj: Any, name: str | None, context: ssl.SSLContext) -> None:
    """A server context's ``sni_callback``: keeps the server name the client sent on the
    connection's SSLObject, where ``get_extra_info("sni")`` finds it (authorization's
    ``connection.sni``). Returns None: the handshake goes on with the same context."""
    setattr(sslobj, SNI_ATTRIBUTE, name)


if TYPE_CHECKING:
    from tulle.transport.tls import TlsProtocol

HANDSHAKE: Final = 0
OPEN: Final = 1
CLOSING: Final = 2
CLOSED: Final = 3
"""A TLS connection's states: its handshake, open, closing (close_notify sent, or aborting), and
closed (the raw connection is lost)."""
WRITE_SLICE: Final = 8192
"""Plaintext encrypted at once (one record): the outgoing BIO's high-water mark. A memory BIO
keeps the capacity it once needed (OpenSSL's BUF_MEM never shrinks): with 16 KiB records both
BIOs hold ~44 KiB for good once a connection has carried a large body; 8 KiB costs ~20 % more CPU
on bulk transfers only, and keeps an idle connection that carried data under 64 KiB of RSS
(benchmarks/tls_memory.py)."""

_NO_EXTRA: Final[dict[str, Any]] = {}  # asyncio.BaseTransport's extra dict, shared: never written


class TlsTransport(asyncio.Transport):
    """What the inner protocol of a :class:`TlsProtocol` writes to: plaintext in, records out
    on the raw transport. ``get_extra_info`` adds ``ssl_object``, ``peercert`` (computed on each
    call: read it once per connection), ``peer_certificate_der``, ``cipher``, ``alpn_protocol``
    (also ``selected_alpn_protocol``), ``sslcontext`` and ``compression`` to what the raw
    transport answers (``peername``, ``sockname``, ``socket``). ``write_eof`` half-closes with
    close_notify (TLS has no other EOF) and the FIN after it; ``close`` sends close_notify too."""

    __slots__ = ("_tls",)

    def __init__(self, tls: TlsProtocol) -> None:
        super().__init__(_NO_EXTRA)
        self._tls = tls

    def write(self, data: bytes | bytearray | memoryview) -> None:
        tls = self._tls
        if tls._state != OPEN:
            return  # after close, as asyncio's transports do: dropped
        size = len(data)
        if size == 0:
            return
        sslobj = tls._records
        raw = tls._raw
        assert sslobj is not None
        assert raw is not None
        try:
            if size <= WRITE_SLICE:
                sslobj.write(data)
                raw.write(tls._outgoing.read())
                return
            # One record at a time, so that the outgoing BIO never holds more than that.
            view = memoryview(data).cast("B")
            records: list[bytes] = []
            start = 0
            while start < size:
                sslobj.write(view[start : start + WRITE_SLICE])
                records.append(tls._outgoing.read())
                start += WRITE_SLICE
        except ssl.SSLError as error:
            tls._error = TlsError(describe(error))
            tls._abort()
            return
        raw.writelines(records)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        """Send close_notify, then close the socket once what is buffered is sent."""
        self._tls._close()

    def abort(self) -> None:
        """Close the socket now, dropping what is buffered."""
        self._tls._abort()

    def is_closing(self) -> bool:
        return self._tls._state >= CLOSING

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: close_notify, then the socket's FIN; the peer's data still arrives.
        Writing after it is a mistake that aborts the connection (OpenSSL refuses it)."""
        self._tls._write_eof()

    def pause_reading(self) -> None:
        tls = self._tls
        if tls._read_paused:
            return
        tls._read_paused = True
        if tls._state < CLOSING and tls._raw is not None:
            tls._raw.pause_reading()

    def resume_reading(self) -> None:
        tls = self._tls
        if not tls._read_paused:
            return
        tls._read_paused = False
        if tls._state < CLOSING and tls._raw is not None:
            tls._raw.resume_reading()
        if tls._readable():  # what arrived while paused (only when paused mid-handshake)
            asyncio.get_running_loop().call_soon(tls._resume_delivery)

    def is_reading(self) -> bool:
        tls = self._tls
        return not tls._read_paused and tls._state < CLOSING

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._tls._raw
        assert raw is not None
        raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        raw = self._tls._raw
        return 0 if raw is None else raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        raw = self._tls._raw
        assert raw is not None
        return raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._tls._inner = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self._tls._inner)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        tls = self._tls
        sslobj = tls._sslobj
        if sslobj is not None:
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "peer_certificate_der":
                return sslobj.getpeercert(True)
            if name == "ssl_object":
                return sslobj
            if name == "cipher":
                return sslobj.cipher()
            if name in ("alpn_protocol", "selected_alpn_protocol"):
                return sslobj.selected_alpn_protocol()
            if name == "sslcontext":
                return sslobj.context
            if name == "sni":  # the server side: what keep_sni recorded at the handshake
                return getattr(sslobj, SNI_ATTRIBUTE, None)
            if name == "compression":
                return sslobj.compression()
        raw = tls._raw
        return default if raw is None else raw.get_extra_info(name, default)
