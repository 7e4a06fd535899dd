"""KMock as the API server of tests/kube: an HTTP server on 127.0.0.1 in a background thread,
with the additions the real clients (kubectl, lightkube) need and KMock 0.8 lacks.

What is added to ``kmock.KubernetesEmulator``, and why:

- discovery of the built-in kinds (KMock's bundled resource list, as a k3s server reports it),
  so that ``kubectl`` can map ``kind: Deployment`` to ``/apis/apps/v1/.../deployments``;
- a created CustomResourceDefinition makes its kind known to discovery, as the API server does
  once the CRD is established (KMock keeps CRDs as plain objects);
- server-side apply (``PATCH`` with ``application/apply-patch+yaml``) of an object that does not
  exist creates it, as the API server does (KMock answers 404 to a patch of a missing object);
- ``metadata.uid``, ``resourceVersion`` (a counter across all objects) and ``creationTimestamp``
  on every write, which clients read back;
- subresources (``deployments/status``) in discovery without their parent's short names, which
  made ``kubectl get ns`` ambiguous, and the core group as ``v1`` (KMock says ``/v1``, which
  hides every core kind from kubectl);
- ``kind``, ``apiVersion`` and ``metadata.resourceVersion`` on lists (kubectl refuses a list
  without a kind);
- ``labelSelector`` (equality: ``k=v``, ``k!=v``, ``k``) on lists, which KMock ignores;
- watches from a resourceVersion, 410 Gone after a compaction, bookmarks, cut connections
  (watching.py).

- the Namespace resource itself (``/api/v1/namespaces``): KMock's path parser is replaced by one
  that reads those paths as Namespaces.

What it does not emulate: field ownership and conflicts of server-side apply (a patch is a
recursive merge, lists replaced), admission webhooks, garbage collection (deleting a namespace
does not delete its objects), controllers (a Deployment's status is whatever a test writes)."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import attrs
import kmock
import kmock._internal.parsing as kmock_parsing
import yaml

from tests.kube.watching import WatchingEmulator

T = TypeVar("T")

APPLY_PATCH = "application/apply-patch+yaml"

_parse_path = kmock_parsing.parse_path


def _parse_path_with_namespaces(path: str) -> kmock_parsing.ParsedPath:
    """KMock's path parser, except that ``/api/v1/namespaces[/NAME[/status|finalize]]`` is the
    Namespace resource (KMock reads ``namespaces`` there as the namespace of another kind and
    fails: no Namespace could be listed, read or deleted)."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        return kmock_parsing.ParsedPath(
            "",
            "v1",
            "namespaces",
            None,
            parts[3] if len(parts) > 3 else None,
            parts[4] if len(parts) > 4 else None,
        )
    return _parse_path(path)


kmock_parsing.parse_path = _parse_path_with_namespaces


def _matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class Emulator(WatchingEmulator):
    """KMock's emulator with discovery, CRDs, server-side apply and label selectors."""

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _last_version: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # load_bundled() uses the deprecated importlib.resources.read_binary (warnings are errors)
        self.resources.load_path(Path(kmock.__file__).parent / "_internal" / "resources.json.gz")

    def _stamp(self, data: dict[str, Any], existing: dict[str, Any] | None) -> None:
        meta = data.setdefault("metadata", {})
        old = (existing or {}).get("metadata", {})
        meta["uid"] = old.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = old.get("creationTimestamp") or datetime.datetime.now(
            tz=datetime.UTC
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.revision += 1  # watching.py's counter: objects, events and lists share it
        self._last_version = self.revision
        meta["resourceVersion"] = str(self._last_version)
        if existing is None:
            meta.setdefault("generation", 1)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            subresources = set((version.get("subresources") or {}).keys())
            self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = (
                kmock.ResourceInfo(
                    kind=names.get("kind"),
                    singular=names.get("singular") or names["plural"],
                    namespaced=spec.get("scope") == "Namespaced",
                    verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
                    shortnames=set(names.get("shortNames", [])),
                    categories=set(names.get("categories", [])),
                    subresources=subresources,
                )
            )

    async def _handle(self, request: kmock.Request) -> Any:
        resource = request.resource
        if resource is not None and isinstance(request.data, dict):
            key = None
            if request.action == kmock.action.CREATE:
                meta = request.data.get("metadata", {})
                key = (resource, request.namespace or meta.get("namespace"), meta.get("name"))
            elif request.action == kmock.action.UPDATE and request.name is not None:
                key = (resource, request.namespace, request.name)
            if key is not None:
                existing = self.objects[key] if key in self.objects else None  # noqa: SIM401
                alive = existing is not None and not existing.deleted
                if request.action == kmock.action.CREATE or request.subresource is None:
                    self._stamp(request.data, existing.raw if alive and existing else None)
                content_type = request.headers.get("Content-Type", "").split(";")[0]
                if (
                    request.action == kmock.action.UPDATE
                    and not alive
                    and content_type == APPLY_PATCH
                    and request.subresource is None
                ):
                    async with self._lock:
                        self.objects[key] = request.data
                    await self._buses[resource].put({"type": "ADDED", "object": request.data})
                    return await self._render_created(request.data)
                if resource.plural == "customresourcedefinitions":
                    self._register_crd(request.data)
        response = await super()._handle(request)
        if (
            resource is not None
            and resource.plural == "customresourcedefinitions"
            and request.action == kmock.action.UPDATE
            and request.name is not None
        ):
            key = (resource, None, request.name)
            if key in self.objects and not self.objects[key].deleted:
                self._register_crd(self.objects[key].raw)
        return response

    async def _render_created(self, data: dict[str, Any]) -> Any:
        import aiohttp.web

        return aiohttp.web.json_response(data, status=201)

    async def _serve_version(self, request: kmock.Request) -> Any:
        # KMock lists a subresource (namespaces/status) with its parent's short names and verbs;
        # kubectl then finds "ns" ambiguous. The API server gives subresources neither.
        payload: Any = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")  # KMock says "/v1"
        for entry in payload.get("resources", []):
            if "/" in entry["name"]:
                entry.update(singularName="", shortNames=[], categories=[])
                entry["verbs"] = ["get", "patch", "update"]
        return payload

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload: Any = await super()._serve_list(request)
        resource = request.resource
        assert resource is not None
        info = self.resources[resource] if resource in self.resources else None  # noqa: SIM401
        kind = info.kind if info is not None and info.kind else "Object"
        group_version = f"{resource.group}/{resource.version}".lstrip("/")
        payload["apiVersion"] = group_version
        payload["kind"] = f"{kind}List"
        payload["metadata"] = {"resourceVersion": str(self.revision)}
        for item in payload["items"]:
            item.setdefault("apiVersion", group_version)
            item.setdefault("kind", kind)
        selector = request.params.get("labelSelector")
        if selector and isinstance(payload, dict):
            payload["items"] = [
                item
                for item in payload["items"]
                if _matches(selector, item.get("metadata", {}).get("labels") or {})
            ]
        return payload


@dataclass
class KubeApi:
    """A running KMock: its URL, a kubeconfig naming it, and a way to run code on its loop."""

    url: str
    kubeconfig: Path
    emulator: Emulator
    loop: asyncio.AbstractEventLoop

    def call(self, function: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        """Run ``function()`` on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(function(), self.loop).result(timeout)

    def objects(self, group_version_plural: str, namespace: str | None = None) -> list[dict]:
        """The live objects of a resource (``apps/v1/deployments``, ``v1/configmaps``)."""
        wanted = kmock.resource(group_version_plural)

        async def read() -> list[dict]:
            return [
                obj.raw
                for (res, ns, _), obj in self.emulator.objects.items()
                if res == wanted and (namespace is None or ns == namespace) and not obj.deleted
            ]

        return self.call(read)


def write_kubeconfig(path: Path, url: str, context: str = "kmock") -> None:
    """A kubeconfig with one context, ``context``, pointing at ``url`` (plain HTTP, no auth)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": url}}],
        "users": [{"name": context, "user": {"token": "kmock"}}],
        "contexts": [
            {"name": context, "context": {"cluster": context, "user": context}},
        ],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


class KMockThread:
    """Runs an :class:`Emulator` served on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, kubeconfig: Path) -> None:
        self._kubeconfig = kubeconfig
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.api: KubeApi | None = None

    def start(self) -> KubeApi:
        """Start the server and return it once it listens."""
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("KMock did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"KMock failed to start: {self._error!r}")
        assert self.api is not None
        return self.api

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        if self.api is not None and self._stop is not None:
            self.api.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by start()
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator) as server:
            url = f"http://{server.host}:{server.port}"
            write_kubeconfig(self._kubeconfig, url)
            self.api = KubeApi(url, self._kubeconfig, emulator, asyncio.get_running_loop())
            self._ready.set()
            await self._stop.wait()
