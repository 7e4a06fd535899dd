"""The connection to the API server: lightkube's config loading, credentials and HTTP client.

Lists and watches return the raw JSON objects (dicts): the registry's mapping reads a few
fields of each, and a watch must see every event as sent, bookmarks and errors included,
which lightkube's typed watch does not pass on (it neither asks for bookmarks nor decodes
one). Requests are built by lightkube (paths, credentials, TLS) and sent by its HTTP
client (httpx2); only the decoding of bodies is done here."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, ConfigError, KubeConfig
from lightkube.core import resource as lightkube_resource
from lightkube.core.generic_client import GenericAsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Node, Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

ALL_NAMESPACES = "*"  # lightkube's ``ALL_NS``: a cluster-wide list or watch
LIST_PAGE = 500
WATCH_SECONDS = (300, 600)
"""A watch asks the server to end it after a random time in this range (as client-go does), so
that watches of many replicas do not all restart at once; the client then resumes it."""


class GoneError(Exception):
    """410 Gone: the resourceVersion is too old to resume from; list again."""


class KubeError(Exception):
    """An API server answer that is not the expected one (its status and message)."""


class KubeConfigError(ValueError):
    """No usable connection settings (kubeconfig, context or in-cluster); says which."""


@dataclass(frozen=True)
class Kind:
    """A kind the registry watches: its name (for logs) and lightkube's resource class."""

    name: str
    resource: type[lightkube_resource.Resource]
    namespaced: bool


NAMESPACES = Kind("Namespace", Namespace, False)
NODES = Kind("Node", Node, False)
SERVICES = Kind("Service", Service, True)
ENDPOINT_SLICES = Kind("EndpointSlice", EndpointSlice, True)
PODS = Kind("Pod", Pod, True)


def load_config(kubeconfig: Path | None, context: str | None) -> Any:
    """lightkube's config: ``kubeconfig`` (its current context, or ``context``); with only a
    context, ``$KUBECONFIG`` or ``~/.kube/config``; with neither, the in-cluster service
    account."""
    try:
        if kubeconfig is None and context is None:
            return KubeConfig.from_service_account().get()
        path = kubeconfig or Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser()
        return KubeConfig.from_file(path).get(context)
    except (ConfigError, KeyError, OSError) as error:
        where = (
            "in-cluster (no --kubeconfig or --context given)"
            if kubeconfig is None and context is None
            else f"kubeconfig {kubeconfig or os.environ.get('KUBECONFIG', '~/.kube/config')}"
            + (f", context {context}" if context else "")
        )
        raise KubeConfigError(f"Kubernetes connection settings, {where}: {error}") from None


class KubeClient:
    """Raw lists and watches against one API server."""

    def __init__(self, config: Any, timeout: float = 10.0) -> None:
        self._client = AsyncClient(config=config, timeout=httpx2.Timeout(timeout))
        generic = self._client._client
        assert isinstance(generic, GenericAsyncClient)
        self._generic = generic
        http = generic._client
        assert isinstance(http, httpx2.AsyncClient)
        self._http = http
        self._timeout = timeout

    @property
    def server(self) -> str:
        """The API server's URL."""
        config = self._generic.config
        return str(config.cluster.server) if config is not None else ""

    async def call(
        self,
        method: str,
        resource: Any,
        name: str | None = None,
        obj: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, str]:
        """One request as lightkube builds it (URL, credentials), its JSON left whole: the
        status code, the body and the reason phrase."""
        basic = self._generic.prepare_request(
            method, res=resource, name=name, obj=obj, headers=headers
        )
        response = await self._http.send(self._generic.build_adapter_request(basic))
        try:
            return response.status_code, response.content, response.reason_phrase
        finally:
            await response.aclose()

    async def list(self, kind: Kind) -> tuple[str, list[dict[str, Any]]]:
        """Every object of ``kind`` (all namespaces) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": LIST_PAGE}
        while True:
            body = await self._get(kind, params)
            metadata = body.get("metadata") or {}
            items.extend(item for item in body.get("items") or () if isinstance(item, dict))
            token = metadata.get("continue")
            if not token:
                return str(metadata.get("resourceVersion") or ""), items
            params = {"limit": LIST_PAGE, "continue": token}

    async def _get(self, kind: Kind, params: dict[str, Any]) -> dict[str, Any]:
        request = self._request(kind, params, watch=False)
        response = await self._http.send(request)
        try:
            if response.status_code == 410:
                raise GoneError(_message(response.content))
            if response.status_code != 200:
                raise KubeError(
                    f"list {kind.name}: HTTP {response.status_code}: {_message(response.content)}"
                )
            body = json.loads(response.content)
        finally:
            await response.aclose()
        if not isinstance(body, dict):
            raise KubeError(f"list {kind.name}: the answer is not a JSON object")
        return body

    def _request(self, kind: Kind, params: dict[str, Any], watch: bool) -> httpx2.Request:
        namespace = ALL_NAMESPACES if kind.namespaced else None
        basic = self._generic.prepare_request(
            "list", res=kind.resource, namespace=namespace, watch=watch, params=params
        )
        if watch:
            seconds = int(params.get("timeoutSeconds", 0)) or WATCH_SECONDS[1]
            # A read gap longer than the server's own deadline means a dead connection.
            basic.timeout = httpx2.Timeout(self._timeout, read=seconds + 30.0)
        return self._generic.build_adapter_request(basic)

    async def watch(self, kind: Kind, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        """The events of ``kind`` after ``resource_version``, BOOKMARKs included, until the
        server ends the watch. Raises :class:`GoneError` for 410 (at the start or as an ERROR
        event), :class:`KubeError` for other errors, httpx2 errors for a broken connection."""
        params = {
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": random.randint(*WATCH_SECONDS),
        }
        request = self._request(kind, params, watch=True)
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                content = await response.aread()
                if response.status_code == 410:
                    raise GoneError(_message(content))
                raise KubeError(
                    f"watch {kind.name}: HTTP {response.status_code}: {_message(content)}"
                )
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise KubeError(f"watch {kind.name}: an event is not a JSON object")
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise GoneError(str(status.get("message", "410 Gone")))
                    raise KubeError(
                        f"watch {kind.name}: {status.get('code')} {status.get('message')}"
                    )
                yield event
        finally:
            await response.aclose()

    async def patch_status(
        self, kind: Kind, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Merge ``status`` into the object's ``.status`` (its status subresource)."""
        status_resource = getattr(kind.resource, "Status", kind.resource)
        await self._client.patch(
            status_resource,
            name,
            {"status": status},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )

    async def create_event(
        self, obj: dict[str, Any], kind: str, reason: str, message: str, component: str
    ) -> None:
        """An Event about ``obj`` (type ``kind``: Normal or Warning), as ``kubectl describe``
        and ``kubectl get events`` show them."""
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") or "default"
        now = datetime.now(UTC)
        event = Event(
            # Named as client-go's event recorder names them: the object's name and the time.
            metadata=ObjectMeta(
                name=f"{metadata.get('name', 'object')}.{time.time_ns():x}", namespace=namespace
            ),
            involvedObject=ObjectReference(
                apiVersion=obj.get("apiVersion"),
                kind=obj.get("kind"),
                name=metadata.get("name"),
                namespace=namespace,
                uid=metadata.get("uid"),
                resourceVersion=metadata.get("resourceVersion"),
            ),
            type=kind,
            reason=reason,
            message=message[:1024],
            source=EventSource(component=component),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
            reportingComponent=component,
        )
        await self._client.create(event)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()


def _message(content: bytes) -> str:
    """A Status's message, or the start of whatever the body is."""
    try:
        status = json.loads(content)
    except ValueError:
        return content[:200].decode(errors="replace")
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return content[:200].decode(errors="replace")
