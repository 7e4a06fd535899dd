"""What is in progress (requests, tunnels and pipes being opened), so a drain can wait for it."""

from __future__ import annotations

import asyncio
import contextlib


class InFlight:
    """A count of requests in progress plus the tasks working on them (held here: the event
    loop keeps only weak references to tasks)."""

    def __init__(self) -> None:
        self.count = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None

    def begin(self) -> None:
        """A request started."""
        self.count += 1

    def end(self) -> None:
        """A request finished."""
        self.count -= 1
        if self.count == 0 and self._idle is not None:
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
        """Until nothing is in progress, or ``timeout`` seconds."""
        if self.count == 0:
            return
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
