"""What the soak does to the running shop, each returning the window it lasted:

- ``controlplane``: SIGKILL the control plane; ``tulle up`` restarts it. Over once its API
  answers and every replica's sidecar or library is connected to it again.
- ``drain``: SIGTERM a replica's app and sidecar at once (as a kubelet stops a pod); the sidecar
  drains, the runner deregisters and restarts the replica. Over once it is ready again.
- ``sidecar``: SIGKILL a replica's sidecar; the runner restarts the replica (app and sidecar,
  as a pod). Over once it is ready again.
- ``netem`` (``--pods`` only): delay and loss on a pod's link (``tc netem`` on its veth, inside
  its network namespace) for a while, then removed.

A disruption waits for what it caused to be over before it returns, so two never overlap."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from tulle.local.state import MeshState, ReplicaState, StateDir
from tulle.security.tokens import admin_token

GIVE_UP = 90.0  # seconds a disruption may take to be over before the soak moves on


@dataclass
class Window:
    """One disruption: what, on whom, from when to when it was over (monotonic seconds)."""

    kind: str
    target: str
    start: float
    end: float
    note: str = ""  # how it went: "back in 2.1 s", "not over after 90 s"

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Disruptor:
    """Disrupts the mesh of one state directory."""

    def __init__(self, state: StateDir, http: httpx.AsyncClient, netem: str) -> None:
        self.state = state
        self.http = http
        self.netem = netem  # tc netem arguments, e.g. "delay 50ms 10ms loss 1%"
        self.netem_seconds = 10.0

    def _mesh(self) -> MeshState:
        mesh = self.state.read()
        if mesh is None:
            raise RuntimeError(f"no mesh runs from {self.state.root}")
        return mesh

    def _replica(self, name: str) -> ReplicaState:
        for replica in self._mesh().replicas:
            if replica.replica == name:
                return replica
        raise RuntimeError(f"no replica {name}")

    async def run(self, kind: str, target: str) -> Window:
        if kind == "controlplane":
            return await self.kill_control_plane()
        if kind == "drain":
            return await self.restart_replica(target, "drain", drain=True)
        if kind == "sidecar":
            return await self.restart_replica(target, "sidecar", drain=False)
        if kind == "netem":
            return await self.impair_link(target)
        raise ValueError(f"unknown disruption {kind!r}")

    async def kill_control_plane(self) -> Window:
        mesh = self._mesh()
        pid, restarts = mesh.control_plane_pid, mesh.control_plane_restarts
        assert pid is not None
        start = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        back_at = await self._until(lambda: self._control_plane_back(restarts))
        if back_at is None:
            return Window("controlplane", "controlplane", start, time.monotonic(),
                          f"not back after {GIVE_UP:g} s")  # fmt: skip
        synced = await self._until(self._all_connected)
        end = synced or time.monotonic()
        note = f"API back in {back_at - start:.1f} s, every node reconnected in {end - start:.1f} s"
        if synced is None:
            note = f"API back in {back_at - start:.1f} s; not every node reconnected"
        return Window("controlplane", "controlplane", start, end, note)

    async def _control_plane_back(self, restarts: int) -> bool:
        mesh = self._mesh()
        if mesh.control_plane_restarts <= restarts:
            return False
        with contextlib.suppress(httpx.HTTPError):
            return (await self.http.get(f"{mesh.api}/healthz")).status_code == 200
        return False

    async def _all_connected(self) -> bool:
        mesh = self._mesh()
        try:
            auth = {"authorization": f"Bearer {admin_token(self.state.control_plane)}"}
            status = await self.http.get(f"{mesh.api}/api/v1/proxy-status", headers=auth)
            nodes = status.json()["nodes"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        pods = {node["node"].split("~")[2].split(".")[0] for node in nodes}
        meshed = {r.replica for r in mesh.replicas if r.mode in ("sidecar", "library")}
        return meshed <= pods

    async def restart_replica(self, name: str, kind: str, drain: bool) -> Window:
        replica = self._replica(name)
        restarts = replica.restarts
        start = time.monotonic()
        if drain:  # the pod stopped: its app and its sidecar told at once
            for pid in (replica.app_pid, replica.proxy_pid):
                if pid:
                    os.kill(pid, signal.SIGTERM)
        else:
            assert replica.proxy_pid is not None, f"{name} has no sidecar"
            os.kill(replica.proxy_pid, signal.SIGKILL)

        async def ready_again() -> bool:
            now = self._replica(name)
            return now.restarts > restarts and now.ready

        end = await self._until(ready_again)
        if end is None:
            return Window(kind, name, start, time.monotonic(), f"not ready after {GIVE_UP:g} s")
        return Window(kind, name, start, end, f"ready again in {end - start:.1f} s")

    async def impair_link(self, name: str) -> Window:
        """``tc netem`` on the pod's veth for a while. A kernel without netem (no
        CONFIG_NET_SCH_NETEM) gets the loss alone, as iptables' random drops on that veth
        both ways, and the window says so."""
        namespace, device = self._pod_link(name)
        inside = ["ip", "netns", "exec", namespace]
        qdisc = [*inside, "tc", "qdisc"]
        start = time.monotonic()
        note = self.netem
        try:
            _run([*qdisc, "add", "dev", device, "root", "netem", *self.netem.split()])
            undo = [[*qdisc, "del", "dev", device, "root"]]
        except RuntimeError as error:
            if "unknown" not in str(error).lower():
                raise
            loss = re.search(r"loss ([\d.]+)%", self.netem)
            probability = float(loss.group(1)) / 100 if loss else 0.01
            drop = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:g}",
                    "-m", "comment", "--comment", "tulle-soak", "-j", "DROP"]  # fmt: skip
            rules = [["INPUT", "-i", device, *drop], ["OUTPUT", "-o", device, *drop]]
            for rule in rules:
                _run([*inside, "iptables", "-I", *rule])
            undo = [[*inside, "iptables", "-D", *rule] for rule in rules]
            note = f"loss {probability:.0%} by iptables (this kernel has no netem: no delay)"
        try:
            await asyncio.sleep(self.netem_seconds)
        finally:
            for command in undo:
                _run(command)
        return Window("netem", name, start, time.monotonic(), note)

    def _pod_link(self, name: str) -> tuple[str, str]:
        """The pod's network namespace and its end of the veth to the bridge."""
        bridge = self._mesh().network.get("bridge", "")
        if not bridge:
            raise RuntimeError("netem needs --pods (each replica in its own namespace)")
        namespace = f"tulle-{bridge.removeprefix('tlbr')}-{name}"
        links = subprocess.run(["ip", "-n", namespace, "-o", "link", "show"], check=True,
                               capture_output=True, text=True).stdout  # fmt: skip
        for line in links.splitlines():
            device = line.split(":")[1].strip().split("@")[0]
            if device != "lo":
                return namespace, device
        raise RuntimeError(f"no link in {namespace}")

    async def _until(self, condition: Callable[[], Awaitable[bool]]) -> float | None:
        """Poll ``condition`` every 50 ms: when it first held (monotonic), or None
        after GIVE_UP seconds."""
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline:
            if await condition():
                return time.monotonic()
            await asyncio.sleep(0.05)
        return None


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
