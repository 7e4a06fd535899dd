"""Watches as a real API server serves them, added to KMock from the test side (KMock 0.8 is used
as is); kmock_server.py's Emulator builds on this class.

What KMock's ``KubernetesEmulator`` does not do for watches, and the tests of ``tulle/kube`` need
(see docs/kubernetes.md, "How this was tested"):

- resourceVersions: every write gets the next number of one cluster-wide counter (as etcd's
  revision), stamped on the object and its watch event; a list carries the current one (KMock
  answers the literal ``"..."``);
- watches from a resourceVersion: ``?watch=true&resourceVersion=N`` replays the events after N
  (KMock replays every object as ADDED on every watch, whatever it is given);
- 410 Gone: after :meth:`WatchingEmulator.compact`, a watch from a resourceVersion older than the
  compaction gets the API server's ``ERROR`` event with a Status of code 410, "too old resource
  version", and the stream ends;
- bookmarks: with ``allowWatchBookmarks=true`` a ``BOOKMARK`` event (only a resourceVersion)
  every ``bookmark_interval`` seconds, and ``timeoutSeconds`` ends a watch as the server would;
- cutting watches: :meth:`WatchingEmulator.cut_watches` closes every open watch connection, as
  an API server restart or a load balancer's idle timeout does; while ``refuse_watches`` is
  set, a new watch gets 503 (an API server still starting);
- ``PUT`` (replace) of an object, which KMock does not route.

Not emulated: label and field selectors on watches (every event of the resource and namespace).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import aiobus, rendering

_Key = tuple[Any, str | None, str]


class _LoggedBus(aiobus.Bus[Any]):
    """A resource's event bus whose every event gets the next resourceVersion, and is logged."""

    def __init__(self, server: WatchingEmulator, resource: Any) -> None:
        super().__init__()
        object.__setattr__(self, "_kube_server", server)
        object.__setattr__(self, "_kube_resource", resource)

    async def put(self, *items: Any) -> None:
        server: WatchingEmulator = self._kube_server  # type: ignore[attr-defined]
        stamped = [server._record(self._kube_resource, item) for item in items]  # type: ignore[attr-defined]
        await super().put(*stamped)


@attrs.define(kw_only=True)
class WatchingEmulator(kmock.KubernetesEmulator):
    """KMock's Kubernetes emulator with resourceVersions, resumable watches, 410 and bookmarks."""

    bookmark_interval: float = 1.0
    refuse_watches: bool = False
    revision: int = attrs.field(default=1, init=False)
    logged: int = attrs.field(default=0, init=False)
    compacted: int = attrs.field(default=0, init=False)
    log: list[tuple[int, Any, dict[str, Any]]] = attrs.field(factory=list, init=False)
    latest: dict[_Key, int] = attrs.field(factory=dict, init=False)
    watches: dict[int, aiohttp.web.BaseRequest] = attrs.field(factory=dict, init=False)
    watch_requests: list[rendering.Request] = attrs.field(factory=list, init=False)
    list_requests: list[rendering.Request] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = _BusMap(self)  # type: ignore[assignment]

    # --- resourceVersions ----------------------------------------------------------------

    def _record(self, resource: Any, event: dict[str, Any]) -> dict[str, Any]:
        given = _version_of(event)
        if given > self.logged:  # the write took its version already (kmock_server's stamp)
            self.revision = max(self.revision, given)
        else:  # a delete, or a write nobody stamped
            self.revision += 1
        self.logged = self.revision
        obj = copy.deepcopy(event.get("object", {}))
        metadata = obj.setdefault("metadata", {})
        metadata["resourceVersion"] = str(self.revision)
        key = (resource, metadata.get("namespace"), metadata.get("name"))
        if event.get("type") == "DELETED":
            self.latest.pop(key, None)
        else:
            self.latest[key] = self.revision
        stamped = {"type": event["type"], "object": obj}
        self.log.append((self.revision, resource, stamped))
        return stamped

    def _with_version(self, resource: Any, raw: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(raw)
        metadata = obj.setdefault("metadata", {})
        version = self.latest.get((resource, metadata.get("namespace"), metadata.get("name")))
        if version is not None:
            metadata["resourceVersion"] = str(version)
        return obj

    def compact(self) -> int:
        """Forget the event history up to now (as etcd's compaction): a watch from an older
        resourceVersion gets 410 Gone. Returns the compacted revision."""
        self.compacted = self.revision
        self.log.clear()
        return self.compacted

    def cut_watches(self) -> int:
        """Close every open watch connection; how many were open."""
        cut = 0
        for raw in list(self.watches.values()):
            transport = raw.transport
            if transport is not None:
                transport.close()
                cut += 1
        self.watches.clear()
        return cut

    # --- serving -------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.name and request.method == "PUT":
            return await self._serve_replace(request)
        return await super()._handle(request)

    async def _serve_replace(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        assert request.name is not None
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            obj = self._objects[key]
            obj.create(request.data)  # a new version with exactly the given content
            raw = obj.raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
            body = self._with_version(request.resource, raw)
        return aiohttp.web.json_response(body)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        self.list_requests.append(request)
        payload = await super()._serve_list(request)
        assert isinstance(payload, dict)
        async with self._lock:
            payload["items"] = [self._with_version(request.resource, o) for o in payload["items"]]
            payload["metadata"] = {"resourceVersion": str(self.revision)}
        return payload

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_fetch(request)
        assert isinstance(payload, dict)
        return self._with_version(request.resource, payload)

    def _matches(self, request: rendering.Request, event: dict[str, Any]) -> bool:
        metadata = event.get("object", {}).get("metadata", {})
        if request.namespace is not None and metadata.get("namespace") != request.namespace:
            return False
        return request.name is None or metadata.get("name") == request.name

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        self.watch_requests.append(request)
        if self.refuse_watches:
            raise kmock.KubernetesError(
                status=503, reason="ServiceUnavailable", message="the API server is starting"
            )
        raw_request = request._raw_request
        assert raw_request is not None
        params = request.params
        since = params.get("resourceVersion") or None
        bookmarks = params.get("allowWatchBookmarks") == "true"
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        yield b""  # the headers go out now, as a real API server's do
        assert request.resource is not None
        bus = self._buses[request.resource]
        async with self._lock:
            marker = await bus.mark()
            if since is not None and since != "0" and int(since) < self.compacted:
                gone = {
                    "type": "ERROR",
                    "object": {
                        "apiVersion": "v1", "kind": "Status", "metadata": {},
                        "status": "Failure", "reason": "Expired", "code": 410,
                        "message": f"too old resource version: {since} ({self.compacted})",
                    },
                }  # fmt: skip
                await bus.unmark(marker)
                yield gone
                return
            if since is None or since == "0":
                first = [
                    {"type": "ADDED", "object": self._with_version(request.resource, obj.raw)}
                    for (resource, namespace, _), obj in self._objects.items()
                    if resource == request.resource and not obj.deleted
                    and request.namespace in (None, namespace)
                ]  # fmt: skip
                seen = self.revision
            else:
                seen = int(since)
                first = [
                    event
                    for version, resource, event in self.log
                    if resource == request.resource and version > seen
                    and self._matches(request, event)
                ]  # fmt: skip
                seen = self.revision
        self.watches[id(raw_request)] = raw_request
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            async for event in bus.stream(since=marker):
                queue.put_nowait(event)

        pumping = asyncio.create_task(pump())
        loop = asyncio.get_running_loop()
        ends = None if timeout is None else loop.time() + timeout
        try:
            for replayed in first:
                yield replayed
            while True:
                wait = self.bookmark_interval if bookmarks else None
                if ends is not None:
                    left = ends - loop.time()
                    if left <= 0:
                        return
                    wait = left if wait is None else min(wait, left)
                try:
                    event = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    if bookmarks:
                        yield {
                            "type": "BOOKMARK",
                            "object": {"kind": "Bookmark", "metadata": {
                                "resourceVersion": str(self.revision)}},
                        }  # fmt: skip
                    continue
                version = int(event["object"]["metadata"]["resourceVersion"])
                if version > seen and self._matches(request, event):
                    yield event
        finally:
            self.watches.pop(id(raw_request), None)
            pumping.cancel()
            await bus.unmark(marker)


def _version_of(event: dict[str, Any]) -> int:
    """The resourceVersion a write stamped on the object (kmock_server.py's counter), or 0."""
    version = event.get("object", {}).get("metadata", {}).get("resourceVersion", "")
    return int(version) if str(version).isdigit() else 0


class _BusMap(dict[Any, _LoggedBus]):
    """``self._buses``: a logged bus per resource, made on first use."""

    def __init__(self, server: WatchingEmulator) -> None:
        super().__init__()
        self._server = server

    def __missing__(self, resource: Any) -> _LoggedBus:
        bus = self[resource] = _LoggedBus(self._server, resource)
        return bus
