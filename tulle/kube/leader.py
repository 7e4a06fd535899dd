"""One leader among the control plane's replicas, elected with a ``coordination.k8s.io/v1``
Lease (``tulle-controlplane-leader`` in the control plane's namespace), as client-go's
leaderelection does.

Every replica serves xDS and signs certificates; only the leader writes to the cluster what
one writer must write (config resources' status and Events, the root certificate's
ConfigMaps). The Lease names its holder and when it last renewed:

- a replica that finds no Lease creates it, naming itself (409: another was first);
- the holder renews it every ``renew_seconds`` (a ``PUT`` carrying the resourceVersion it
  read: a write of another replica in between makes it fail, 409); if it cannot renew for
  ``lease_seconds`` it stops leading (the others may have taken over by then);
- the others read it every ``retry_seconds`` and take it over once it has not changed for
  ``lease_seconds`` **as they observed it** (the local monotonic clock from when they saw the
  record change; the holder's ``renewTime`` is not compared with this machine's clock), or at
  once when it names no holder;
- a leader that stops gives it up (no holder, ``leaseDurationSeconds: 1``), so another replica
  takes over within ``retry_seconds`` rather than ``lease_seconds``.

Leadership changes are reported through ``on_change(leading)`` on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx2
from lightkube import AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from tulle.kube.ca_secret import status_reason
from tulle.kube.client import load_config
from tulle.kube.install.names import LEADER_LEASE, labels

log = logging.getLogger(__name__)

LEASE_SECONDS = 15.0
RENEW_SECONDS = 5.0
RETRY_SECONDS = 2.0


def replica_identity() -> str:
    """This replica's name in the Lease: its pod's name (``$POD_NAME``, unique in the namespace;
    the same pod restarted continues its own lease), else the host name and a random suffix."""
    pod = os.environ.get("POD_NAME", "").strip()
    return pod or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    """Takes part in the election of ``namespace``'s Lease as ``identity``."""

    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        identity: str,
        on_change: Callable[[bool], None],
        name: str = LEADER_LEASE,
        lease_seconds: float = LEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.on_change = on_change
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.leading = False
        self.holder = ""  # who holds the Lease, as last read
        self.last_error = ""
        self.transitions = 0
        self.rounds = 0  # rounds that read (or wrote) the Lease
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def connect(
        cls,
        kubeconfig: Path | None,
        context: str | None,
        namespace: str,
        on_change: Callable[[bool], None],
    ) -> LeaderElector:
        """An elector for the API server of ``kubeconfig``/``context`` (in-cluster without)."""
        config = load_config(kubeconfig, context)
        client = AsyncClient(config=config, timeout=httpx2.Timeout(5.0))
        return cls(client, namespace, replica_identity(), on_change)

    def __str__(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def start(self) -> None:
        """Take part from now on (on the running loop)."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
                self.rounds += 1
                self.last_error = ""
            except httpx2.HTTPError as error:
                reason = (
                    status_reason(error)
                    if isinstance(error, httpx2.HTTPStatusError)
                    else f"API server unreachable: {error}"
                )
                if reason != self.last_error:
                    log.warning("leader election (%s): %s", self, reason)
                self.last_error = reason
            if self.leading and self.clock() - self._renewed_at > self.lease_seconds:
                log.warning("%s not renewed for %.0fs: no longer leading", self, self.lease_seconds)
                self._set_leading(False)
            await asyncio.sleep(self.renew_seconds if self.leading else self.retry_seconds)

    async def step(self) -> None:
        """One round: create, renew or take over the Lease, or watch it held by another."""
        now = self.clock()
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except httpx2.HTTPStatusError as error:
            if error.response.status_code != 404:
                raise
            await self._create()
            return
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity or ""
        record = (holder, str(spec.renewTime))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        self.holder = holder
        if holder == self.identity:
            await self._write(lease, spec, acquire=False)
            return
        if self.leading:  # another replica holds it now
            log.warning("%s is held by %s: no longer leading", self, holder)
            self._set_leading(False)
        duration = spec.leaseDurationSeconds or self.lease_seconds
        if holder and now - self._observed_at <= duration:
            return  # held, and renewed within its duration as we saw it
        await self._write(lease, spec, acquire=True)

    async def _create(self) -> None:
        now = datetime.now(UTC)
        lease = Lease(
            metadata=ObjectMeta(
                name=self.name, namespace=self.namespace, labels=labels(self.namespace)
            ),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=int(self.lease_seconds),
                acquireTime=now,
                renewTime=now,
                leaseTransitions=0,
            ),
        )
        try:
            await self.client.create(lease)
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 409:
                return  # another replica created it first: read it next round
            raise
        self._acquired()

    async def _write(self, lease: Lease, spec: LeaseSpec, acquire: bool) -> None:
        """Renew the Lease (``acquire``: take it over) at the resourceVersion read."""
        now = datetime.now(UTC)
        transitions = (spec.leaseTransitions or 0) + (1 if acquire else 0)
        lease.spec = LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.lease_seconds),
            acquireTime=now if acquire else spec.acquireTime,
            renewTime=now,
            leaseTransitions=transitions,
        )
        try:
            await self.client.replace(lease)
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 409:
                return  # written by another replica since it was read: read it again
            raise
        self.transitions = transitions
        if acquire:
            self._acquired()
        else:
            self._renewed_at = self.clock()

    def _acquired(self) -> None:
        self._renewed_at = self.clock()
        self.holder = self.identity
        log.info("%s acquired by %s: leading", self, self.identity)
        self._set_leading(True)

    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            self.on_change(leading)

    async def stop(self) -> None:
        """Stop taking part; a leader gives the Lease up so another takes over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.leading:
            with contextlib.suppress(httpx2.HTTPError):
                await self._release()
            self._set_leading(False)
        await self.client.close()

    async def _release(self) -> None:
        lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        spec = lease.spec or LeaseSpec()
        if spec.holderIdentity != self.identity:
            return
        lease.spec = LeaseSpec(
            holderIdentity=None,
            leaseDurationSeconds=1,
            acquireTime=spec.acquireTime,
            renewTime=datetime.now(UTC),
            leaseTransitions=spec.leaseTransitions,
        )
        await self.client.replace(lease)
        log.info("%s released by %s", self, self.identity)
