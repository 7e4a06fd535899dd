"""What is in progress (requests, tunnels and pipes being opened, and the app's open
connections), so a drain can tell each connection to finish and wait for all of it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class Drainable(Protocol):
    """A downstream connection a drain tells to finish what it was asked, then close; and
    that ``expire`` (every second or so) lets close itself when a client is too slow or idle
    too long."""

    def drain(self) -> None: ...
    def expire(self, now: float) -> None: ...


class InFlight:
    """A count of requests in progress plus the tasks working on them (held here: the event
    loop keeps only weak references to tasks), and the open downstream connections."""

    def __init__(self) -> None:
        self.count = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections: set[Drainable] = set()
        self.draining = False
        self._idle: asyncio.Event | None = None

    def begin(self) -> None:
        """A request started."""
        self.count += 1

    def end(self) -> None:
        """A request finished."""
        self.count -= 1
        self._check_idle()

    def opened(self, connection: Drainable) -> None:
        """A downstream connection opened (during a drain it is told to drain at once)."""
        self.connections.add(connection)
        if self.draining:
            connection.drain()

    def closed(self, connection: Drainable) -> None:
        """A downstream connection closed."""
        self.connections.discard(connection)
        self._check_idle()

    def drain(self) -> None:
        """Tell every open connection to finish what it was asked and close."""
        self.draining = True
        for connection in list(self.connections):
            connection.drain()

    def sweep(self, now: float) -> None:
        """Let every open connection apply its timeouts (header, idle) at ``now``."""
        for connection in list(self.connections):
            connection.expire(now)

    def _check_idle(self) -> None:
        if self.count == 0 and not self.connections and self._idle is not None:
            self._idle.set()

    def track(self, task: asyncio.Task[None]) -> None:
        """Work in progress until ``task`` is done."""
        self.begin()
        self.tasks.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            self.end()

        task.add_done_callback(finished)

    async def wait(self, timeout: float) -> None:
        """Until nothing is in progress and every connection has closed, or ``timeout``
        seconds."""
        if self.count == 0 and not self.connections:
            return
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
