"""A transport for driving a front end's asyncio.Protocol without a socket: it keeps what is
written, honours pause/resume (the harness feeds nothing while reading is paused, as a real
transport would), and, like asyncio's, calls ``connection_lost`` once, on the next turn of the
loop after ``close``."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeTransport(asyncio.Transport):
    """One downstream connection's transport; ``lose`` is the client going away."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closing = False
        self.lost = False
        self.paused = False
        self.closed_by_protocol = False  # the front end closed it (not the client)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # Bytes written after ``close`` are kept: asyncio and uvloop both take them (and send
        # them if the socket is still open), so the checks of what the client reads see them.
        if self.lost:
            return
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = self.closed_by_protocol = True
            asyncio.get_running_loop().call_soon(self.lose)

    def abort(self) -> None:
        self.close()

    def lose(self) -> None:
        """The connection is gone (the client went away, or the close took effect)."""
        self.closing = True
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 15001)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_reading(self) -> bool:
        return not self.paused

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass
