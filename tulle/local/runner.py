"""The runner behind ``tulle up``: starts the control plane, then every replica (app and
sidecar, like a pod; app and ``tulle agent`` for proxyless gRPC), registers each replica's
endpoint once its readiness check passes, restarts a crashed replica with backoff, restarts a
control plane that exits (on the same ports and store, then puts right the registrations it
missed while down), and on stop deregisters, drains and stops everything, the control plane
last. This module is the run from start to stop (and the pods of ``--pods``); its parts:
``control_plane`` (start, restart), ``replicas`` (a replica's life), ``registrations`` (the
service registry), ``runtime`` (the options and the state they share)."""

from __future__ import annotations

import asyncio
import contextlib

from tulle.api import validate_paths
from tulle.local.control_plane import ControlPlaneKeeper
from tulle.local.plan import ReplicaPlan, plan_replicas
from tulle.local.pods import hosts_file
from tulle.local.processes import stop
from tulle.local.replicas import ReplicaSupervisor
from tulle.local.runtime import Replica, RunOptions, app_address
from tulle.local.state import ReplicaState
from tulle.security.tokens import admin_token

__all__ = ["MeshConfigError", "Replica", "RunOptions", "Runner"]


class MeshConfigError(Exception):
    """The mesh config has errors; the message lists every finding with file and line."""


class Runner(ControlPlaneKeeper, ReplicaSupervisor):
    """Runs a mesh until told to stop."""

    async def run(self) -> None:
        """Start everything, run until ``stopping`` is set, then stop everything."""
        state_dir = self.options.state
        state_dir.prepare()
        # The control plane reads the same token file; the runner makes it first.
        self.api.headers["authorization"] = f"Bearer {admin_token(state_dir.control_plane)}"
        # the files are the mesh (its control plane validates them so too): an undefined host
        # is an ERROR, Workloads or not
        result = validate_paths(self.options.files, strict_hosts=True)
        if not result.ok or result.model is None:
            raise MeshConfigError("\n".join(f.format() for f in result.findings))
        keeper: asyncio.Task[None] | None = None
        try:
            if self.network is not None:
                self.network.create()
                self.state.network = {"bridge": self.network.bridge, "namespaces": []}
                self._save()
            await self._start_control_plane()
            keeper = asyncio.create_task(self._keep_control_plane())
            plans = plan_replicas(result.model, (self.state.xds, self.state.api),
                                  pods=self.network is not None)  # fmt: skip
            await self._forget_stale_endpoints({p.workload.name for p in plans})
            if self.network is not None:
                self._make_pods(plans, [w.service_host for w in result.model.workloads])
            for plan in plans:
                status = ReplicaState(plan.workload.name, plan.name, plan.mode,
                                      address=self._address(plan), ip=plan.ip,
                                      app=app_address(plan))  # fmt: skip
                self.replicas.append(Replica(plan, status))
                self.state.replicas.append(status)
            self._save()
            supervisors = [asyncio.create_task(self._supervise(r)) for r in self.replicas]
            await self._announce_when_ready()
            await self.stopping.wait()
            self.state.phase = "stopping"
            self._save()
            await self._shutdown(supervisors)
        finally:
            self.stopping.set()
            if keeper is not None:
                await asyncio.gather(keeper, return_exceptions=True)
            if self.control_plane is not None:
                await stop(self.control_plane, self.options.grace)
            await self.http.aclose()
            await self.api.aclose()
            if self.network is not None:
                self.network.remove()
            state_dir.clear()

    def _make_pods(self, plans: list[ReplicaPlan], services: list[str]) -> None:
        """A network namespace per replica, with the services' names in its hosts file and,
        for a sidecar pod, the redirect rules (its init step)."""
        assert self.network is not None
        hosts = hosts_file(services)
        for plan in plans:
            assert plan.pod_index is not None
            namespace = self.network.add_pod(plan.name, plan.pod_index, plan.ip, hosts)
            self.state.network["namespaces"].append(namespace)
            self._save()
            if plan.sidecar is not None:
                self.network.redirect(namespace)

    async def _announce_when_ready(self) -> None:
        """Say once when every replica is ready (the mesh is up)."""
        while not self.stopping.is_set():
            if all(r.status.ready for r in self.replicas):
                self.state.phase = "running"
                self._save()
                self.echo(f"tulle up: {len(self.replicas)} replicas ready "
                          "(tulle status, tulle logs, tulle down or Ctrl-C)")  # fmt: skip
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.2)

    async def _shutdown(self, supervisors: list[asyncio.Task[None]]) -> None:
        """Deregister every replica (traffic moves away), then stop them all at once."""
        self.echo("tulle up: stopping")
        await asyncio.gather(*supervisors, return_exceptions=True)
        for replica in self.replicas:
            replica.status.ready = False
            if replica.registered:
                await self._register(replica, "DELETE")
        self._save()
        await asyncio.gather(*(self._stop_processes(r) for r in self.replicas))
