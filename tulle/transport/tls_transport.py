"""The transport the inner protocol of a :class:`~tulle.transport.tls.TlsProtocol` sees: what it
writes is encrypted onto the raw transport; everything else is asked of the TlsProtocol."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from tulle.transport.tls import TlsProtocol

_NO_EXTRA: dict[str, Any] = {}  # asyncio.BaseTransport's extra dict, shared: never written


class TlsTransport(asyncio.Transport):
    """What the inner protocol of a :class:`TlsProtocol` writes to: plaintext in, records out
    on the raw transport. ``get_extra_info`` adds ``ssl_object``, ``peercert`` (computed on each
    call: read it once per connection), ``peer_certificate_der``, ``cipher``, ``alpn_protocol``
    (also ``selected_alpn_protocol``), ``sslcontext`` and ``compression`` to what the raw
    transport answers (``peername``, ``sockname``, ``socket``). It cannot half-close: TLS has
    no EOF apart from close_notify, which ``close`` sends."""

    __slots__ = ("_tls",)

    def __init__(self, tls: TlsProtocol) -> None:
        super().__init__(_NO_EXTRA)
        self._tls = tls

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._tls._write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._tls._write(b"".join(list_of_data))

    def close(self) -> None:
        """Send close_notify, then close the socket once what is buffered is sent."""
        self._tls._close()

    def abort(self) -> None:
        """Close the socket now, dropping what is buffered."""
        self._tls._abort()

    def is_closing(self) -> bool:
        return self._tls._is_closing()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a TLS connection cannot half-close here: close() it")

    def pause_reading(self) -> None:
        self._tls._pause_reading()

    def resume_reading(self) -> None:
        self._tls._resume_reading()

    def is_reading(self) -> bool:
        return self._tls._is_reading()

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
            if name == "compression":
                return sslobj.compression()
        raw = tls._raw
        return default if raw is None else raw.get_extra_info(name, default)
