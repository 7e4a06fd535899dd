"""Connections to an upstream on a Unix domain socket (a ServiceEntry endpoint
``unix:///path``, sent over EDS as an Envoy pipe address): plain text, or mutual TLS over the
socket when the endpoint is in the mesh. No SO_MARK (interception never sees a Unix socket)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Final, TypeVar

from tulle.engine.message import UpstreamError
from tulle.transport.tls_errors import TlsError, TlsOrigin
from tulle.transport.tls_open import open_tls_connection

P = TypeVar("P", bound=asyncio.Protocol)

UNIX_PREFIX: Final = "unix://"


async def open_unix(
    factory: Callable[[], P], path: str, timeout: float, tls: TlsOrigin | None = None
) -> P:
    """Connect ``factory()`` to the Unix socket at ``path``; UpstreamError("connect", reason)
    naming the path when it cannot."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, path)
            if tls is None:
                _, protocol = await loop.create_connection(factory, sock=sock)
                return protocol
            context, verify, sni = tls
            return await open_tls_connection(
                loop, factory, None, None, context,
                sock=sock, server_hostname=sni, verify_peer=verify, timeout=timeout,
            )  # fmt: skip
    except TimeoutError:
        sock.close()
        raise UpstreamError("connect", f"timed out after {timeout:g}s ({path})") from None
    except TlsError as error:
        sock.close()
        raise UpstreamError("connect", f"mTLS: {error.reason} ({path})") from None
    except OSError as error:
        sock.close()
        raise UpstreamError("connect", f"{error.strerror or error} ({path})") from None
