"""Counting what only the cycle collector can free: garbage that costs a long-lived process a
collection every so often, and a pause in its latency."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable


async def cycle_garbage_of(step: Callable[[], Awaitable[object]], times: int) -> int:
    """How many objects the cycle collector frees after ``step`` has run ``times`` times with
    it switched off (after three warm-up runs, so that objects made once are not counted)."""
    for _ in range(3):
        await step()
    gc.collect()
    gc.disable()
    try:
        for _ in range(times):
            await step()
        return gc.collect()
    finally:
        gc.enable()
