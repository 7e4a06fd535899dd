"""The control plane's changes: apply, delete, register and deregister run one at a time in a
thread of their own (parsing and validating a large config takes seconds of CPU, and the event
loop that serves xDS and the API must keep answering meanwhile); each asks for a push when it
changed something."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from tulle.control.config import ChangeResult
from tulle.control.plane_state import PlaneState
from tulle.control.registry import Endpoint
from tulle.control.store import ResourceKey

T = TypeVar("T")


class Changes(PlaneState):
    """Config and registry changes, off the event loop, one at a time."""

    async def _change(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(*args)`` in the changes thread (one change at a time, off the loop)."""
        self._in_flight += 1
        self._settled.clear()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._changes, work, *args)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._settled.set()

    @property
    def applies_in_flight(self) -> int:
        """Applies waiting for, or in, validation."""
        return self._applies

    async def apply(self, text: str, filename: str) -> ChangeResult:
        """Apply YAML text; see :meth:`ConfigSources.apply`."""
        self._applies += 1
        try:
            result = await self._change(self.config.apply, text, filename)
        finally:
            self._applies -= 1
        if result.accepted and (result.created or result.updated):
            self.changed()
        return result

    async def delete(self, key: ResourceKey) -> ChangeResult:
        """Delete an applied resource."""
        result = await self._change(self.config.delete, key)
        if result.accepted:
            self.changed()
        return result

    async def register(self, endpoint: Endpoint) -> bool:
        """Register (or update) an endpoint."""
        changed = await self._change(self._register, endpoint)
        if changed:
            self.changed()
        return changed

    async def deregister(self, endpoint_id: str) -> bool:
        """Deregister an endpoint."""
        removed = await self._change(self._deregister, endpoint_id)
        if removed:
            self.changed()
        return removed

    def _register(self, endpoint: Endpoint) -> bool:
        changed = self.registry.register(endpoint)
        if changed:
            self.config.revalidate()
        return changed

    def _deregister(self, endpoint_id: str) -> bool:
        removed = self.registry.deregister(endpoint_id)
        if removed:
            self.config.revalidate()
        return removed
