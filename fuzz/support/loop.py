"""Running one fuzz input on an event loop of its own (a fresh asyncio loop costs about 50 µs):
timers and tasks an input leaves cannot fire during the next one. Every task is kept, so an
exception that ends one is a failure of this input, not a log line at some later collection;
so is an exception in a loop callback."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from fuzz.support.checks import CheckError


class InputLoop:
    """An event loop for one input, which fails the input with whatever escaped into it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.tasks: list[asyncio.Task[Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _, context: self.errors.append(context))
        self.loop.set_task_factory(self._task)

    def _task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        self.tasks.append(task)
        return task

    def run(self, main: Coroutine[Any, Any, None]) -> None:
        """Run ``main``, then cancel what is left; raise the first error seen."""
        try:
            self.loop.run_until_complete(main)
        finally:
            left = [task for task in self.tasks if not task.done()]
            for task in left:
                task.cancel()
            if left:
                self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            self.loop.close()
        for context in self.errors:
            error = context.get("exception")
            name = type(error).__name__ if error is not None else "an error"
            raise CheckError(f"loop callback raised {name}", str(context)) from error
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                error = task.exception()
                raise CheckError(
                    f"task raised {type(error).__name__}", f"{task.get_coro()}: {error}"
                ) from error


async def turns(count: int) -> None:
    """Let the loop run ``count`` times (callbacks and tasks ready now, and those they make
    ready)."""
    for _ in range(count):
        await asyncio.sleep(0)
