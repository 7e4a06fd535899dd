"""Opening a connection to an upstream endpoint: optional SO_MARK (so interception rules let
the proxy's own traffic pass), a connect timeout, and failures as UpstreamError saying why."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from tulle.engine.message import UpstreamError
from tulle.transport.interception import marked_socket

P = TypeVar("P", bound=asyncio.Protocol)


async def open_upstream(
    factory: Callable[[], P], address: str, port: int, timeout: float, mark: int | None
) -> P:
    """Connect ``factory()`` to ``address:port``; raises UpstreamError("connect", reason)."""
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
