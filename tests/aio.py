"""Waiting inside an event loop for a state to be reached, for tests that drive one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the loop run until ``condition()`` is true (a state to reach, not a delay)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.001)
