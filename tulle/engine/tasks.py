"""Bridging callbacks and coroutines: run a coroutine and hand its result to a callback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from tulle.engine import errors
from tulle.engine.message import Response, mesh_response

log: Final = logging.getLogger(__name__)
T = TypeVar("T")

Cancel = Callable[[], None]  # cancels work handed to a callback (then the callback is not called)


def nothing_to_cancel() -> None:
    """The Cancel of work that has already ended (answered at once, or already cancelled)."""


_running: Final[set[asyncio.Task[Any]]] = set()  # the loop keeps only weak references to tasks


def run_then(
    work: Coroutine[Any, Any, T],
    done: Callable[[T], None],
    failed: Callable[[BaseException], T],
) -> Cancel:
    """Run ``work`` as a task and call ``done`` with its result, or with ``failed(exception)``
    when it raised. Returns the function that cancels it (then ``done`` is not called)."""
    task = asyncio.get_running_loop().create_task(work)
    _running.add(task)

    def finished(task: asyncio.Task[T]) -> None:
        _running.discard(task)
        if task.cancelled():
            return
        failure = task.exception()
        done(task.result() if failure is None else failed(failure))

    task.add_done_callback(finished)

    def cancel() -> None:
        task.cancel()

    return cancel


def resolver(future: asyncio.Future[T]) -> Callable[[T], None]:
    """A callback that completes ``future`` with its argument, unless the future is already
    done (cancelled meanwhile, by a shutdown or a client that went away)."""

    def resolve(result: T) -> None:
        if not future.done():
            future.set_result(result)

    return resolve


def _internal_error(failure: BaseException) -> Response:
    log.error("request failed inside the proxy", exc_info=failure)
    return mesh_response(errors.MeshError(500, "DPE", f"internal error: {failure!r}"))


def spawn(work: Coroutine[Any, Any, Response], done: Callable[[Response], None]) -> Cancel:
    """Run ``work`` and call ``done`` with its response. A bug that escapes ``work`` still
    answers (500 with the reason) rather than leaving the client waiting. Returns the function
    that cancels it (then ``done`` is not called)."""
    return run_then(work, done, _internal_error)
