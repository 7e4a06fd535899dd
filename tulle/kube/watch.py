"""One kind's informer: list, then watch from the list's resourceVersion, as client-go's reflector
and kopf's watcher do.

- The list fills a cache keyed by namespace and name, and its resourceVersion is where the
  watch starts; each event updates the cache and the resourceVersion (a BOOKMARK moves only
  the resourceVersion, so that a resume after a quiet hour does not start from a compacted one).
- A watch the server ends (its timeout) or that is cut (a dropped connection, a restarted API
  server) resumes from the last resourceVersion seen: no list, no event lost or repeated.
- 410 Gone (the resourceVersion is older than the server keeps) means events were lost: list
  again and replace the whole cache, so that objects deleted meanwhile go too (at once; a 410
  again before any event backs off, so a confused server is not listed in a tight loop).
- Any other error (refused connection, 403, 500, a garbled stream) waits before the next try:
  exponential, capped, with jitter, reset by the first event that arrives.

Every change calls ``on_change``; coalescing a burst into one update is the caller's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from tulle.kube.client import GoneError, Kind

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]
"""``(namespace, name)``; the namespace is ``""`` for a cluster-scoped object."""


class Source(Protocol):
    """Lists and watches of a kind (:class:`~tulle.kube.client.KubeClient`, or a test's)."""

    def list(self, kind: Kind) -> Awaitable[tuple[str, list[dict[str, Any]]]]:
        """Every object and the list's resourceVersion."""
        ...

    def watch(self, kind: Kind, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        """Events after ``resource_version``; raises :class:`GoneError` for 410."""
        ...


@dataclass(frozen=True)
class Backoff:
    """Exponential delays, capped, with jitter: ``attempt`` 1 waits about ``first`` seconds."""

    first: float = 0.2
    cap: float = 30.0
    jitter: float = 0.5  # each delay is scaled by a random factor in [1 - jitter, 1]

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` >= 1 failures so far)."""
        base = min(self.cap, self.first * 2.0 ** min(attempt - 1, 30))
        return base * (1.0 - self.jitter * random.random())


def object_key(obj: dict[str, Any]) -> ObjectKey | None:
    """``(namespace, name)`` of an object, if it has a name."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return None
    namespace = metadata.get("namespace")
    return (namespace if isinstance(namespace, str) else "", metadata["name"])


def _version(obj: Any) -> str | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) and version else None


@dataclass
class WatchStats:
    """What a watcher did, for logs, the API and tests."""

    lists: int = 0
    resumes: int = 0
    gone: int = 0
    errors: int = 0
    events: int = 0
    bookmarks: int = 0
    last_error: str = ""


class Watcher:
    """The cache of one kind, kept current by list and watch (see the module docstring)."""

    def __init__(
        self,
        kind: Kind,
        source: Source,
        on_change: Callable[[], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.kind = kind
        self.source = source
        self.on_change = on_change
        self.backoff = backoff or Backoff()
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.stats = WatchStats()

    async def run(self) -> None:
        """List and watch until cancelled."""
        listed = False
        failures = 0
        gone_in_a_row = 0  # 410 again right after a list: the server is unwell, do not spin
        while True:
            try:
                if not listed:
                    await self._list()
                    listed = True
                    failures = 0
                async for event in self.source.watch(self.kind, self.resource_version):
                    failures = gone_in_a_row = 0
                    self._apply(event)
                # The server ended the watch (its timeoutSeconds): resume where it stopped.
                self.stats.resumes += 1
                log.debug("%s watch ended; resuming from %s", self.kind.name, self.resource_version)
            except asyncio.CancelledError:
                raise
            except GoneError as error:
                self.stats.gone += 1
                log.info(
                    "%s: resourceVersion %s is gone (%s); listing again",
                    self.kind.name, self.resource_version, error,
                )  # fmt: skip
                listed = False
                gone_in_a_row += 1
                if gone_in_a_row > 1:
                    await asyncio.sleep(self.backoff.delay(gone_in_a_row - 1))
            except Exception as error:  # a refused connection, 403, a garbled stream...
                failures += 1
                self.stats.errors += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
                delay = self.backoff.delay(failures)
                # A watch cut once (an API server restart, an idle timeout) is routine.
                level = logging.INFO if listed and failures == 1 else logging.WARNING
                log.log(
                    level,
                    "%s %s failed (%s); retrying in %.1fs%s",
                    self.kind.name, "watch" if listed else "list", self.stats.last_error, delay,
                    f" from resourceVersion {self.resource_version}" if listed else "",
                )  # fmt: skip
                await asyncio.sleep(delay)
                if listed:
                    self.stats.resumes += 1

    async def _list(self) -> None:
        version, items = await self.source.list(self.kind)
        objects: dict[ObjectKey, dict[str, Any]] = {}
        for item in items:
            key = object_key(item)
            if key is not None:
                objects[key] = item
        self.objects = objects
        self.resource_version = version
        self.stats.lists += 1
        self.synced.set()
        self.on_change()

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object")
        version = _version(obj)
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
            if version:
                self.resource_version = version
            return
        if not isinstance(obj, dict):
            return
        key = object_key(obj)
        if key is None:
            return
        if kind in ("ADDED", "MODIFIED"):
            self.objects[key] = obj
        elif kind == "DELETED":
            self.objects.pop(key, None)
        else:
            log.warning("%s watch: unknown event type %r ignored", self.kind.name, kind)
            return
        if version:
            self.resource_version = version
        self.stats.events += 1
        self.on_change()


class Coalescer:
    """Calls ``flush`` once after a burst of :meth:`poke` calls: ``quiet`` seconds after the last
    one, or ``longest`` seconds after the first, whichever is sooner."""

    def __init__(self, flush: Callable[[], None], quiet: float = 0.1, longest: float = 1.0):
        self.flush = flush
        self.quiet, self.longest = quiet, longest
        self._poked = asyncio.Event()
        self.flushes = 0

    def poke(self) -> None:
        """Something changed."""
        self._poked.set()

    async def run(self) -> None:
        """Flush after each burst, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._poked.wait()
            ends = loop.time() + self.longest
            while True:
                self._poked.clear()
                left = ends - loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._poked.wait(), min(self.quiet, left))
                except TimeoutError:
                    break
            self._poked.clear()
            self.flushes += 1
            self.flush()


class WatchGroup:
    """Watches of several kinds into one :class:`Coalescer` that calls ``_flush`` once per burst;
    the base of the registry and of the config source."""

    def __init__(
        self, kinds: Iterable[Kind], source: Source, backoff: Backoff | None,
        quiet: float, longest: float,
    ) -> None:  # fmt: skip
        self.coalescer = Coalescer(self._flush, quiet, longest)
        self.watchers = {
            kind.name: Watcher(kind, source, self.coalescer.poke, backoff) for kind in kinds
        }
        self._tasks: list[asyncio.Task[None]] = []

    def _flush(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start the watches and the coalescer (on the running loop)."""
        self._tasks = [asyncio.create_task(w.run()) for w in self.watchers.values()]
        self._tasks.append(asyncio.create_task(self.coalescer.run()))

    async def stop(self) -> None:
        """Stop every watch."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def status(self) -> dict[str, Any]:
        """Per kind: objects, resourceVersion and what its watch did (lists, resumes...)."""
        return {
            name: {
                "objects": len(w.objects),
                "resourceVersion": w.resource_version,
                "synced": w.synced.is_set(),
                **vars(w.stats),
            }
            for name, w in self.watchers.items()
        }
