"""Opening a connection to an upstream endpoint: optional SO_MARK (so interception rules let
the proxy's own traffic pass), optional mutual TLS (an endpoint in the mesh), a connect timeout,
and failures as UpstreamError saying why."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TypeVar

from tulle.engine.connection_options import TcpKeepaliveSpec
from tulle.engine.message import UpstreamError
from tulle.transport.interception import marked_socket
from tulle.transport.tls_errors import TlsError, TlsOrigin
from tulle.transport.tls_open import open_tls_connection
from tulle.transport.unix import UNIX_PREFIX, open_unix

P = TypeVar("P", bound=asyncio.Protocol)


async def open_upstream(
    factory: Callable[[], P],
    address: str,
    port: int,
    timeout: float,
    mark: int | None,
    tls: TlsOrigin | None = None,
) -> P:
    """Connect ``factory()`` to ``address:port`` (over mutual TLS with ``tls``), or to the Unix
    socket ``unix:///path``; raises UpstreamError("connect", reason)."""
    if address.startswith(UNIX_PREFIX):
        return await open_unix(factory, address[len(UNIX_PREFIX) :], timeout, tls)
    if tls is not None:
        return await _open_tls(factory, address, port, timeout, mark, tls)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            if mark is None:
                _, protocol = await loop.create_connection(factory, address, port)
                return protocol
            sock = marked_socket(mark)
            try:
                await loop.sock_connect(sock, (address, port))
            except BaseException:
                sock.close()
                raise
            _, protocol = await loop.create_connection(factory, sock=sock)
            return protocol
    except TimeoutError:
        raise UpstreamError("connect", f"timed out after {timeout:g}s") from None
    except ConnectionRefusedError:
        raise UpstreamError("connect", "refused") from None
    except OSError as error:
        raise UpstreamError("connect", error.strerror or str(error)) from None


def set_keepalive(transport: asyncio.BaseTransport | None, keepalive: TcpKeepaliveSpec) -> None:
    """SO_KEEPALIVE on an open connection's socket, with TCP_KEEPIDLE, TCP_KEEPINTVL and
    TCP_KEEPCNT where given (a DestinationRule's ``tcpKeepalive``; the OS's otherwise)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:  # closed already
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = (
        (socket.TCP_KEEPIDLE, keepalive.time),
        (socket.TCP_KEEPINTVL, keepalive.interval),
        (socket.TCP_KEEPCNT, keepalive.probes),
    )
    for option, value in options:
        if value is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def _open_tls(
    factory: Callable[[], P],
    address: str,
    port: int,
    timeout: float,
    mark: int | None,
    tls: TlsOrigin,
) -> P:
    """:func:`open_upstream` over mutual TLS: the handshake and the server's identity checked
    before the connection is used; a refusal says which side refused and why."""
    loop = asyncio.get_running_loop()
    context, verify, sni = tls
    sock = None
    try:
        async with asyncio.timeout(timeout):
            if mark is not None:
                sock = marked_socket(mark)
                await loop.sock_connect(sock, (address, port))
            return await open_tls_connection(
                loop, factory, None if sock else address, None if sock else port, context,
                sock=sock, server_hostname=sni, verify_peer=verify, timeout=timeout,
            )  # fmt: skip
    except TimeoutError:
        if sock is not None:
            sock.close()
        raise UpstreamError("connect", f"timed out after {timeout:g}s (mTLS)") from None
    except TlsError as error:
        raise UpstreamError("connect", f"mTLS: {error.reason}") from None
    except ConnectionRefusedError:
        raise UpstreamError("connect", "refused") from None
    except OSError as error:
        if sock is not None:
            sock.close()
        raise UpstreamError("connect", error.strerror or str(error)) from None
