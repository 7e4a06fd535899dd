"""The webhook configurations' caBundle, kept equal to the mesh CA's root bundle.

``tulle install`` writes the MutatingWebhookConfiguration (injection) and the
ValidatingWebhookConfiguration (validation) without a caBundle; the control plane, whose
webhook certificate the mesh CA issues, writes its trust bundle there: at start, at once when
the bundle changes (a root rotation: a staged root is trusted before it signs), and every
minute in case someone edited it. A configuration that does not exist yet (the install applies
the webhooks last) or an API server that fails is retried with a growing delay, and said in
the log.

The write is a JSON merge patch of the whole ``webhooks`` list with the object's
``resourceVersion`` in it: the API server refuses it (409) if the configuration changed since
it was read, and then it is read again, so an edit made meanwhile is never overwritten."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.types import PatchType

from tulle.kube.client import KubeClient, load_config
from tulle.kube.install.names import injector_name, validator_name

log = logging.getLogger(__name__)

RESYNC_SECONDS = 60.0
RETRY_SECONDS = (1.0, 30.0)
"""The first and the longest delay before trying again after a failure."""
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Target:
    """One webhook configuration: its kind (lightkube's class) and name."""

    kind: type[MutatingWebhookConfiguration] | type[ValidatingWebhookConfiguration]
    name: str

    def __str__(self) -> str:
        return f"{self.kind.__name__} {self.name}"


def targets(namespace: str) -> list[Target]:
    """The configurations ``tulle install`` writes for a control plane in ``namespace``."""
    return [
        Target(MutatingWebhookConfiguration, injector_name(namespace)),
        Target(ValidatingWebhookConfiguration, validator_name(namespace)),
    ]


def with_bundle(webhooks: list[dict[str, Any]], bundle: str) -> list[dict[str, Any]]:
    """``webhooks`` with ``clientConfig.caBundle`` set to ``bundle`` (base64) in each."""
    result = []
    for webhook in webhooks:
        client = {**(webhook.get("clientConfig") or {}), "caBundle": bundle}
        result.append({**webhook, "clientConfig": client})
    return result


class ApiStatusError(Exception):
    """An API server answer other than success: its HTTP status and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code


class CaBundleKeeper:
    """Keeps the caBundle of the webhook configurations of a control plane in ``namespace``
    equal to ``bundle()`` (PEM). ``status`` says, per configuration, what was last done.

    The objects are read and written as JSON, not through lightkube's models: a model older
    than the cluster would drop the fields it does not know (``matchConditions``, say) from
    the webhooks, and the patch, which replaces the list, would erase them."""

    def __init__(
        self,
        kubeconfig: Path | None,
        context: str | None,
        namespace: str,
        bundle: Callable[[], bytes],
        resync: float = RESYNC_SECONDS,
    ) -> None:
        self._kube = KubeClient(load_config(kubeconfig, context))
        self.targets = targets(namespace)
        self.bundle = bundle
        self.resync = resync
        self.status: dict[str, str] = {str(target): "not checked yet" for target in self.targets}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start keeping (on the running loop): a sync now, then on changes and every minute."""
        self._task = asyncio.create_task(self._run())

    def bundle_changed(self) -> None:
        """The trust bundle changed: write it now."""
        self._changed.set()

    async def _run(self) -> None:
        delay = RETRY_SECONDS[0]
        while True:
            self._changed.clear()
            wait = self.resync
            if not await self.sync():
                wait, delay = delay, min(delay * 2, RETRY_SECONDS[1])
            else:
                delay = RETRY_SECONDS[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def sync(self) -> bool:
        """Write the current bundle where it differs; True when every configuration has it."""
        encoded = base64.b64encode(self.bundle()).decode()
        done = True
        for target in self.targets:
            try:
                self.status[str(target)] = await self._sync(target, encoded)
            except ApiStatusError as error:
                done = False
                reason = "not found (not installed yet?)" if error.code == 404 else str(error)
                self._failed(target, reason)
            except (httpx2.HTTPError, OSError, ValueError) as error:
                done = False
                self._failed(target, f"API server unreachable or answering nonsense: {error}")
        return done

    def _failed(self, target: Target, reason: str) -> None:
        message = f"cannot write the caBundle of {target}: {reason}; retrying"
        if self.status.get(str(target)) != message:
            log.warning("%s", message)
        self.status[str(target)] = message

    async def _call(
        self, method: str, target: Target, patch: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"Content-Type": PatchType.MERGE.value} if patch is not None else None
        code, content, reason = await self._kube.call(
            method, target.kind, name=target.name, obj=patch, headers=headers
        )
        try:
            body = json.loads(content) if content else {}
        except ValueError:
            body = {}
        if code >= 300:
            message = body.get("message") if isinstance(body, dict) else None
            raise ApiStatusError(code, str(message or reason))
        if not isinstance(body, dict):
            raise ValueError(f"{method} {target}: the answer is not a JSON object")
        return body

    async def _sync(self, target: Target, encoded: str) -> str:
        for _ in range(CONFLICT_RETRIES):
            current = await self._call("get", target)
            webhooks = current.get("webhooks") or []
            wanted = with_bundle(webhooks, encoded)
            if wanted == webhooks:
                return "current"
            metadata = current.get("metadata") or {}
            patch = {
                "metadata": {"resourceVersion": metadata.get("resourceVersion")},
                "webhooks": wanted,
            }
            try:
                await self._call("patch", target, patch)
            except ApiStatusError as error:
                if error.code == 409:  # changed since read: read it again
                    continue
                raise
            log.info("caBundle of %s written (%d webhooks)", target, len(wanted))
            return "written"
        raise ApiStatusError(409, f"{target} kept changing ({CONFLICT_RETRIES} conflicts in a row)")

    async def stop(self) -> None:
        """Stop keeping and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._kube.close()
