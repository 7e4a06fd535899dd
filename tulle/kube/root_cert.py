"""The mesh's root certificate published as the ConfigMap ``tulle-ca-root-cert`` (key
``root-cert.pem``) in every namespace, where injected pods mount it to verify the control
plane (as Istio's ``istio-ca-root-cert``).

A sync lists the Namespaces and the ConfigMaps this control plane published (by the install's
labels: one list each, whatever the number of namespaces), then creates the ConfigMap where it
is missing and updates it where it differs (a merge patch carrying the ``resourceVersion`` it
was read at: the API server refuses it if it changed meanwhile, and the next sync reads it
again). It runs at start, at once when the trust bundle changes (each step of a root rotation)
or a namespace appears, and every minute (someone may have edited or deleted one). A namespace
being deleted is skipped; a failure is logged once and retried with a growing delay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace
from lightkube.types import PatchType

from tulle.kube.ca_secret import status_reason
from tulle.kube.client import load_config
from tulle.kube.install.names import INSTANCE, ROOT_CERT, labels

log = logging.getLogger(__name__)

KEY = "root-cert.pem"
RESYNC_SECONDS = 60.0
RETRY_SECONDS = (1.0, 30.0)


class RootCertPublisher:
    """Keeps ``tulle-ca-root-cert`` equal to ``bundle()`` in every namespace."""

    def __init__(
        self,
        client: AsyncClient,
        install_namespace: str,
        bundle: Callable[[], bytes],
        resync: float = RESYNC_SECONDS,
    ) -> None:
        self.client = client
        self.install_namespace = install_namespace
        self.bundle = bundle
        self.resync = resync
        self.published: dict[str, str] = {}  # namespace -> what was last done there
        self.may_write: Callable[[], bool] = lambda: True  # False: not the leader, write nothing
        self.syncs = 0
        self.last_error = ""
        self._namespaces: frozenset[str] = frozenset()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def connect(
        cls,
        kubeconfig: Path | None,
        context: str | None,
        install_namespace: str,
        bundle: Callable[[], bytes],
    ) -> RootCertPublisher:
        """A publisher for the API server of ``kubeconfig``/``context`` (in-cluster without)."""
        config = load_config(kubeconfig, context)
        client = AsyncClient(config=config, timeout=httpx2.Timeout(10.0))
        return cls(client, install_namespace, bundle)

    def start(self) -> None:
        """Publish now, then on changes and every ``resync`` seconds (on the running loop)."""
        self._task = asyncio.create_task(self._run())

    def bundle_changed(self) -> None:
        """The trust bundle changed: publish it now."""
        self._changed.set()

    def namespaces_changed(self, namespaces: frozenset[str]) -> None:
        """The cluster's namespaces (as the registry last saw them): publish now if one is new."""
        if not namespaces <= self._namespaces:
            self._changed.set()
        self._namespaces = namespaces

    async def _run(self) -> None:
        delay = RETRY_SECONDS[0]
        while True:
            self._changed.clear()
            wait = self.resync
            if await self.sync():
                delay = RETRY_SECONDS[0]
            else:
                wait, delay = delay, min(delay * 2, RETRY_SECONDS[1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def sync(self) -> bool:
        """Publish where needed; True when every namespace has the current bundle (or when
        this replica may not write: another one publishes)."""
        if not self.may_write():
            return True
        pem = self.bundle().decode()
        try:
            namespaces = [ns async for ns in self.client.list(Namespace) if ns.metadata is not None]
            selector: dict[str, Any] = {INSTANCE: self.install_namespace}
            existing = {
                cm.metadata.namespace: cm
                async for cm in self.client.list(ConfigMap, namespace="*", labels=selector)
                if cm.metadata is not None and cm.metadata.name == ROOT_CERT
            }
        except httpx2.HTTPError as error:
            return self._failed(f"cannot list namespaces and ConfigMaps: {_reason(error)}")
        self._namespaces = frozenset(str(ns.metadata.name) for ns in namespaces if ns.metadata)
        done = True
        for ns in namespaces:
            name = str(ns.metadata.name) if ns.metadata is not None else ""
            if ns.metadata is not None and ns.metadata.deletionTimestamp is not None:
                self.published.pop(name, None)  # being deleted: nothing can be created there
                continue
            current = existing.get(name)
            try:
                self.published[name] = await self._publish(name, current, pem)
            except httpx2.HTTPError as error:
                done = False
                self.published[name] = f"failed: {_reason(error)}"
        if not done:
            failed = sorted(ns for ns, what in self.published.items() if what.startswith("fail"))
            return self._failed(f"cannot publish {ROOT_CERT} in {', '.join(failed)}")
        self.syncs += 1
        self.last_error = ""
        return True

    async def _publish(self, namespace: str, current: ConfigMap | None, pem: str) -> str:
        if current is not None and (current.data or {}).get(KEY) == pem:
            return "current"
        if current is None:
            body = ConfigMap(
                metadata=ObjectMeta(
                    name=ROOT_CERT, namespace=namespace, labels=labels(self.install_namespace)
                ),
                data={KEY: pem},
            )
            try:
                await self.client.create(body)
                log.info("%s created in namespace %s", ROOT_CERT, namespace)
                return "created"
            except httpx2.HTTPStatusError as error:
                if error.response.status_code != 409:
                    raise
                # There already (made by hand, or before the labels): take it over.
                current = await self.client.get(ConfigMap, ROOT_CERT, namespace=namespace)
        version = current.metadata.resourceVersion if current.metadata is not None else None
        patch = {
            "metadata": {"resourceVersion": version, "labels": labels(self.install_namespace)},
            "data": {KEY: pem},
        }
        await self.client.patch(
            ConfigMap, ROOT_CERT, patch, namespace=namespace, patch_type=PatchType.MERGE
        )
        log.info("%s updated in namespace %s", ROOT_CERT, namespace)
        return "updated"

    def _failed(self, message: str) -> bool:
        if message != self.last_error:
            log.warning("%s; retrying", message)
        self.last_error = message
        return False

    async def stop(self) -> None:
        """Stop publishing and close the connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()


def _reason(error: httpx2.HTTPError) -> str:
    if isinstance(error, httpx2.HTTPStatusError):
        return status_reason(error)
    return f"API server unreachable: {error}"
