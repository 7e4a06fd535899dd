"""What the parts of ``tulle up``'s runner share: its options, a replica at run time (its plan,
processes and status) and ``RunnerBase``, the runner's state (the mesh's status file, the
control plane's process, the replicas, the HTTP clients) with the helpers every part uses: the
environment of the processes it starts, the status file's writes, a command run in a pod. The
parts: ``registrations`` (the service registry), ``control_plane`` (starting and restarting the
control plane), ``replicas`` (a replica's life); ``runner`` puts them together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tulle.local.plan import LOOPBACK, ReplicaPlan
from tulle.local.pods import GATEWAY, PodNetwork
from tulle.local.state import MeshState, ReplicaState, StateDir
from tulle.local.targets import TARGETS_FILE, write_targets

TULLE = [sys.executable, "-m", "tulle"]
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
MESH_MARK = "TULLE_MESH_STATE"
STABLE_SECONDS = 10.0  # up this long, a replica's next crash starts the backoff afresh


async def restart_pause(
    stopping: asyncio.Event, backoff: float, began: float, echo: Callable[[str], None], what: str
) -> float:
    """Before restarting ``what`` crashed (it had run since ``began``): the backoff afresh if
    it had run ``STABLE_SECONDS``, echoed (``<what>; restarting in <n>s``), then waited out (or
    cut short by ``stopping``); the next crash's backoff, doubled up to ``BACKOFF_MAX``."""
    if time.monotonic() - began > STABLE_SECONDS:
        backoff = BACKOFF_FIRST
    echo(f"{what}; restarting in {backoff:g}s")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), backoff)
    return min(backoff * 2, BACKOFF_MAX)


@dataclass
class RunOptions:
    """How ``tulle up`` runs the mesh."""

    files: Sequence[Path]
    state: StateDir
    api_port: int = 15014
    xds_port: int = 15010
    grace: float = 10.0  # seconds a process has to stop after SIGTERM
    pods: bool = False  # each replica in its own network namespace (root)


class Replica:
    """One replica at run time: its plan, its processes and what status shows."""

    def __init__(self, plan: ReplicaPlan, status: ReplicaState) -> None:
        self.plan = plan
        self.status = status
        self.app: asyncio.subprocess.Process | None = None
        self.proxy: asyncio.subprocess.Process | None = None
        self.agent: asyncio.subprocess.Process | None = None  # proxyless: its tulle agent
        self.registered = False  # whether its endpoints should be in the registry now


class RunnerBase:
    """The runner's state, shared by its parts (the ``Runner`` class is all of them)."""

    def __init__(self, options: RunOptions, echo: Callable[[str], None] = print) -> None:
        self.options = options
        self.echo = echo
        self.state = MeshState(runner_pid=os.getpid(), started_at=time.time())
        self.stopping = asyncio.Event()
        self.control_plane: asyncio.subprocess.Process | None = None
        self.replicas: list[Replica] = []
        # Registrations and the put-right after a control-plane restart, one at a time.
        self.registry_lock = asyncio.Lock()
        self.http = httpx.AsyncClient(timeout=5.0)  # readiness checks of replicas
        self.api = httpx.AsyncClient(timeout=5.0)  # the control plane's API, as its admin
        self.network = PodNetwork(os.urandom(2).hex()) if options.pods else None
        self.host = GATEWAY if options.pods else LOOPBACK  # where the control plane listens

    def _address(self, plan: ReplicaPlan) -> str:
        endpoints = plan.endpoints
        return f"{plan.ip}:{endpoints[0][0]}" if endpoints else ""

    def _in_pod(self, plan: ReplicaPlan, args: list[str]) -> list[str]:
        """``args`` run inside the replica's network namespace (with --pods)."""
        if self.network is None:
            return args
        return ["ip", "netns", "exec", self.network.namespace(plan.name), *args]

    def _environment(self) -> dict[str, str]:
        """The runner's environment, with the mark of this mesh: every process it starts
        carries ``TULLE_MESH_STATE`` (how ``tulle down --force`` and tests find them all)."""
        return {**os.environ, MESH_MARK: str(self.options.state.root.resolve())}

    def _save(self) -> None:
        self.options.state.write(self.state)
        write_targets(self.options.state.root / TARGETS_FILE, self.state)


def app_address(plan: ReplicaPlan) -> str:
    """The app's own first port: in loopback local mode a local process reaches the app there
    around its sidecar (docs/security.md, "Where STRICT really holds")."""
    return f"{plan.ip}:{plan.app_port(None)}" if plan.app_ports else ""
