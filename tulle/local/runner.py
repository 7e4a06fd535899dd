"""The runner behind ``tulle up``: starts the control plane, then every replica (app and
sidecar, like a pod; app and ``tulle agent`` for proxyless gRPC), registers each replica's
endpoint once its readiness check passes, restarts a crashed replica with backoff, restarts a
control plane that exits (on the same ports and store, then puts right the registrations it
missed while down), and on stop deregisters, drains and stops everything, the control plane
last."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tulle.api import validate_paths
from tulle.local.plan import LOOPBACK, ReplicaPlan, free_port, plan_replica, plan_replicas
from tulle.local.pods import (
    GATEWAY,
    OUTBOUND_PORT,
    SIDECAR_MARK,
    PodNetwork,
    hosts_file,
    probe_in_pod,
)
from tulle.local.processes import describe_exit, spawn, stop
from tulle.local.proxyless import agent_args, first_certificate, write_bootstrap
from tulle.local.state import MeshState, ReplicaState, StateDir
from tulle.security.material import BUNDLE_FILE
from tulle.security.tokens import BootstrapTokens, admin_token

TULLE = [sys.executable, "-m", "tulle"]
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
MESH_MARK = "TULLE_MESH_STATE"
STABLE_SECONDS = 10.0  # up this long, a replica's next crash starts the backoff afresh


class MeshConfigError(Exception):
    """The mesh config has errors; the message lists every finding with file and line."""


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


class Runner:
    """Runs a mesh until told to stop."""

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

    # --- start ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything, run until ``stopping`` is set, then stop everything."""
        state_dir = self.options.state
        state_dir.prepare()
        # The control plane reads the same token file; the runner makes it first.
        self.api.headers["authorization"] = f"Bearer {admin_token(state_dir.control_plane)}"
        result = validate_paths(self.options.files)
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
                                      app=_app_address(plan))  # fmt: skip
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

    async def _start_control_plane(self) -> None:
        """Pick the control plane's ports (kept for its restarts) and start it."""
        options = self.options
        xds_port = options.xds_port or free_port()
        api_port = options.api_port or free_port()
        self.state.xds = f"{self.host}:{xds_port}"
        self.state.secure_xds = f"{self.host}:{free_port()}"
        self.state.api = f"http://{self.host}:{api_port}"
        await self._spawn_control_plane()
        self.echo(f"tulle up: control plane API {self.state.api}, xDS {self.state.xds}")

    async def _spawn_control_plane(self) -> None:
        """Start the control plane on the ports in the state; return once its API answers
        (or the runner is told to stop)."""
        options = self.options
        args = [*TULLE, "controlplane", "--state-dir", str(options.state.control_plane),
                "--xds-port", self.state.xds.rsplit(":", 1)[1],
                "--secure-xds-port", self.state.secure_xds.rsplit(":", 1)[1],
                "--http-port", self.state.api.rsplit(":", 1)[1],
                "--host", self.host, "--log-level", "warning"]  # fmt: skip
        for path in options.files:
            args += ["-f", str(path)]
        log = options.state.log("controlplane")
        self.control_plane = await spawn(args, self._environment(), log)
        self.state.control_plane_pid = self.control_plane.pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self.control_plane.returncode is not None:
                raise RuntimeError(f"the control plane exited; see {log}:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.http.get(f"{self.state.api}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        if not self.stopping.is_set():
            raise RuntimeError(f"the control plane did not answer within 20 s; see {log}")

    async def _keep_control_plane(self) -> None:
        """Restart the control plane when it exits (killed, crashed) until the runner stops: on
        the same ports and store, so the sidecars and libraries, which keep serving on their
        last config meanwhile, reconnect to it and nothing applied is lost; then the registry
        is put right. The backoff is a replica's (1 s, doubling while it keeps failing)."""
        backoff = BACKOFF_FIRST
        while not self.stopping.is_set():
            assert self.control_plane is not None
            began = time.monotonic()
            exited = asyncio.create_task(self.control_plane.wait())
            stopping = asyncio.create_task(self.stopping.wait())
            await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if self.stopping.is_set():
                exited.cancel()
                return
            what = describe_exit(exited.result())
            self.state.control_plane_restarts += 1
            self.state.control_plane_last_exit = what
            self._save()
            if time.monotonic() - began > STABLE_SECONDS:
                backoff = BACKOFF_FIRST
            self.echo(f"tulle up: the control plane {what}; restarting in {backoff:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            if self.stopping.is_set():
                return
            try:
                await self._spawn_control_plane()
            except RuntimeError as error:  # it exited, or never answered: stop it, try again
                self.echo(f"tulle up: restarting the control plane failed: {error}")
                await stop(self.control_plane, self.options.grace)
                continue
            finally:
                self._save()  # its new pid
            if not self.stopping.is_set():
                self.echo(f"tulle up: control plane restarted (pid {self.control_plane.pid})")
                await self._put_registry_right()

    async def _put_registry_right(self) -> None:
        """What changed while the control plane was down: every replica that should be
        registered is, and endpoints of this mesh's workloads that no replica should have any
        more (a replica restarted elsewhere, or stopped) are removed."""
        api = f"{self.state.api}/api/v1/endpoints"
        async with self.registry_lock:
            try:
                items = (await self.api.get(api)).json()["items"]
            except (httpx.HTTPError, ValueError, KeyError) as error:
                self.echo(f"tulle up: reading the registry failed: {error}")
                return
            wanted = {(r.plan.ip, port): r for r in self.replicas if r.registered
                      for port, _, _ in r.plan.endpoints}  # fmt: skip
            workloads = {r.plan.workload.name for r in self.replicas}
            present = set()
            for item in items:
                key = (item.get("address"), item.get("port"))
                present.add(key)
                if item.get("workload") in workloads and key not in wanted:
                    await self._send_registration("DELETE", _identity(item), "stale endpoint")
            for replica in {id(r): r for k, r in wanted.items() if k not in present}.values():
                for body in _registrations(replica.plan, replica.status.ready):
                    await self._send_registration("POST", body, replica.plan.name)

    async def _forget_stale_endpoints(self, workloads: set[str]) -> None:
        """Endpoints a previous run of these workloads registered are gone now."""
        response = await self.api.get(f"{self.state.api}/api/v1/endpoints")
        for item in response.json()["items"]:
            if item.get("workload") in workloads:
                await self.api.request("DELETE", f"{self.state.api}/api/v1/endpoints",
                                       json=_identity(item))  # fmt: skip

    def _address(self, plan: ReplicaPlan) -> str:
        endpoints = plan.endpoints
        return f"{plan.ip}:{endpoints[0][0]}" if endpoints else ""

    def _in_pod(self, plan: ReplicaPlan, args: list[str]) -> list[str]:
        """``args`` run inside the replica's network namespace (with --pods)."""
        if self.network is None:
            return args
        return ["ip", "netns", "exec", self.network.namespace(plan.name), *args]

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

    # --- a replica's life --------------------------------------------------------------------

    async def _supervise(self, replica: Replica) -> None:
        """Keep the replica running; a failure of the runner itself is said, not swallowed."""
        try:
            await self._keep_running(replica)
        except Exception as error:
            replica.status.last_exit = f"runner error: {error!r}"
            self._save()
            self.echo(f"  {replica.plan.name}: runner error: {error!r}")
            raise

    async def _keep_running(self, replica: Replica) -> None:
        """Start the replica, register it once ready, restart it with backoff when it dies."""
        backoff = BACKOFF_FIRST
        first = True
        while not self.stopping.is_set():
            began = time.monotonic()
            if not first and self.network is None:  # fresh ports: one may have been taken
                self._replan(replica)
            first = False
            await self._start(replica)
            if replica.plan.mode == "proxyless" and replica.app is not None:
                # An xds=True grpcio server serves its port only once the control plane sent
                # the Listener for the address it listens on, which it makes for registered
                # endpoints: registered not ready (EDS UNHEALTHY: no caller picks it) until then.
                await self._register(replica, "POST", healthy=False)
            exited = asyncio.create_task(self._first_exit(replica))
            ready = asyncio.create_task(self._wait_ready(replica))
            await asyncio.wait([exited, ready], return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and ready.result():
                await self._register(replica, "POST")
                replica.status.ready = True
                self._save()
                self.echo(f"  {replica.plan.name:<22} {replica.plan.mode:<8} ready  "
                          f"{replica.status.address}")  # fmt: skip
            else:
                ready.cancel()
            stopping = asyncio.create_task(self.stopping.wait())
            await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if self.stopping.is_set():
                exited.cancel()
                return
            what = exited.result()
            replica.status.ready = False
            if replica.registered:
                await self._register(replica, "DELETE")
            await self._stop_processes(replica)
            replica.status.restarts += 1
            replica.status.last_exit = what
            self._save()
            if time.monotonic() - began > STABLE_SECONDS:
                backoff = BACKOFF_FIRST
            self.echo(f"  {replica.plan.name:<22} {what}; restarting in {backoff:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _replan(self, replica: Replica) -> None:
        plan = replica.plan
        control_plane = (self.state.xds, self.state.api)
        replica.plan = plan_replica(plan.workload, plan.index, control_plane)
        replica.status.address = self._address(replica.plan)
        replica.status.app = _app_address(replica.plan)

    def _identity(self, plan: ReplicaPlan) -> dict[str, str]:
        """A meshed replica's proof of who it is: a bootstrap token of its own (its namespace
        and service account, for its pod only), and the trust bundle to check the control
        plane with; as the library's variables (the sidecar gets them as options)."""
        workload = plan.workload
        tokens = BootstrapTokens(self.options.state.control_plane)
        token = tokens.issue(workload.namespace, workload.service_account,
                             f"{plan.name}.{workload.namespace}")  # fmt: skip
        root = self.options.state.control_plane / BUNDLE_FILE
        return {"TULLE_XDS_ADDRESS": self.state.secure_xds, "TULLE_XDS_ROOT_CERT": str(root),
                "TULLE_TOKEN_FILE": str(token)}  # fmt: skip

    async def _start(self, replica: Replica) -> None:
        plan, status, state = replica.plan, replica.status, self.options.state
        identity = self._identity(plan) if plan.workload.mesh != "none" else {}
        if plan.sidecar is not None:
            ports = plan.sidecar
            token = state.admin_token(plan.name)
            args = [*TULLE, "proxy", "--xds", identity["TULLE_XDS_ADDRESS"],
                    "--xds-root-cert", identity["TULLE_XDS_ROOT_CERT"],
                    "--token-file", identity["TULLE_TOKEN_FILE"], "--node-id", plan.node_id,
                    "--admin-port", str(ports.admin), "--admin-token-file", str(token.resolve()),
                    "--stats-port", str(ports.stats),
                    "--inbound-port", str(ports.inbound)]  # fmt: skip
            if ports.http_proxy is not None:  # callers reach the inbound listener itself
                args += ["--http-proxy-port", str(ports.http_proxy),
                         "--app-port", str(next(iter(plan.app_ports.values()), 0))]  # fmt: skip
            else:  # a pod: its app's traffic is redirected; /ready and stats on its address
                # (no --app-port: each inbound connection goes to the port it was made to,
                # one of the app's own, so every port of a several-port app is reached)
                args += ["--outbound-port", str(OUTBOUND_PORT), "--mark", hex(SIDECAR_MARK),
                         "--stats-host", "0.0.0.0"]  # fmt: skip
            log = state.log(f"{plan.name}.proxy")
            replica.proxy = await spawn(self._in_pod(plan, args), self._environment(), log)
            status.proxy_pid, status.admin_port = replica.proxy.pid, ports.admin
            status.stats_port, status.admin_token_file = ports.stats, str(token.resolve())
        # The runner's Python environment first on PATH: `python3` in a Workload's command is
        # the interpreter `tulle up` runs in (with Tulle and grpcio for the apps that import them).
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**self._environment(), "PATH": path, "PYTHONUNBUFFERED": "1", **plan.env}
        if plan.workload.mesh == "library":
            env.update(identity)
        elif plan.workload.mesh == "proxyless":
            replica.app = None  # until started: not the last run's, which has exited
            if not await self._start_agent(replica, identity):
                self._save()
                return  # the agent ended (its log says why) or the runner is stopping
            env["GRPC_XDS_BOOTSTRAP"] = str(state.grpc_bootstrap(plan.name))
        log = state.log(f"{plan.name}.app")
        replica.app = await spawn(self._in_pod(plan, plan.command), env, log)
        status.app_pid, status.metrics_port = replica.app.pid, plan.metrics_port
        status.started_at = time.time()
        self._save()

    async def _start_agent(self, replica: Replica, identity: dict[str, str]) -> bool:
        """A proxyless replica's ``tulle agent`` and its app's gRPC bootstrap (secure: TLS to
        the control plane with the replica's token, the agent's files as the ``default``
        certificate provider). True once the agent has written the first certificate; False
        when it ended first (a refused token: its log has the CA's reason) or the runner stops."""
        plan, status, state = replica.plan, replica.status, self.options.state
        certs = state.certs(plan.name).resolve()
        shutil.rmtree(certs, ignore_errors=True)  # a restart waits for files of its own agent
        args = [*TULLE, *agent_args(plan, identity, certs)]
        log = state.log(f"{plan.name}.agent")
        replica.agent = await spawn(self._in_pod(plan, args), self._environment(), log)
        status.agent_pid, status.certs = replica.agent.pid, str(certs)
        write_bootstrap(state.grpc_bootstrap(plan.name), plan, identity["TULLE_XDS_ADDRESS"], certs)
        self._save()
        return await first_certificate(certs, replica.agent, self.stopping)

    async def _first_exit(self, replica: Replica) -> str:
        """How the replica ended: its app exited, or its sidecar or agent did (the pod goes
        with it)."""
        waits = {asyncio.create_task(replica.app.wait()): "app"} if replica.app else {}
        if replica.proxy is not None:
            waits[asyncio.create_task(replica.proxy.wait())] = "sidecar"
        if replica.agent is not None:
            waits[asyncio.create_task(replica.agent.wait())] = "agent"
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        first = next(iter(done))
        which = waits[first]
        code = describe_exit(first.result())
        return code if which == "app" else f"{which} {code}"

    async def _wait_ready(self, replica: Replica) -> bool:
        """Probe until the app (and its sidecar) are ready."""
        kind, port, path = replica.plan.readiness_target()
        check = replica.plan.workload.readiness
        period = check.period if check else 0.5
        timeout = check.timeout if check else 1.0
        while not self.stopping.is_set():
            probed = await self._probe(replica.plan, kind, port, path, timeout)
            if probed and await self._sidecar_ready(replica):
                return True
            await asyncio.sleep(min(period, 0.5))
        return False

    async def _probe(
        self, plan: ReplicaPlan, kind: str, port: int, path: str | None, timeout: float
    ) -> bool:
        """One readiness probe of the app: on its own port (from inside its pod with --pods,
        past the pod's redirect rules, as a kubelet probe bypasses the sidecar)."""
        if self.network is not None:
            namespace = self.network.namespace(plan.name)
            return await asyncio.to_thread(probe_in_pod, namespace, kind, port, path, timeout)
        try:
            if kind == "http":
                url = f"http://{plan.ip}:{port}{path or '/'}"
                response = await self.http.get(url, timeout=timeout)
                return 200 <= response.status_code < 400
            connecting = asyncio.open_connection(plan.ip, port)
            _, writer = await asyncio.wait_for(connecting, timeout)
            writer.close()
            return True
        except (OSError, TimeoutError, httpx.HTTPError):
            return False

    async def _sidecar_ready(self, replica: Replica) -> bool:
        if replica.plan.sidecar is None:
            return True
        # The read-only stats listener: the admin one is on the sidecar's loopback only.
        url = f"http://{replica.plan.ip}:{replica.plan.sidecar.stats}/ready"
        try:
            return (await self.http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _register(self, replica: Replica, method: str, healthy: bool = True) -> None:
        """Add (POST) or remove (DELETE) the replica's endpoints in the service registry. The
        wish is kept: what fails while the control plane is down is done once it is back."""
        async with self.registry_lock:
            replica.registered = method == "POST"
            for body in _registrations(replica.plan, healthy):
                await self._send_registration(method, body, replica.plan.name)

    async def _send_registration(self, method: str, body: dict[str, Any], who: str) -> None:
        try:
            response = await self.api.request(
                method, f"{self.state.api}/api/v1/endpoints", json=body
            )
        except httpx.HTTPError as error:
            self.echo(f"  {who}: {method} endpoint failed: {error or type(error).__name__}")
            return
        if response.is_error and not (method == "DELETE" and response.status_code == 404):
            self.echo(f"  {who}: {method} endpoint failed: {response.status_code} "
                      f"{response.text.strip()}")  # fmt: skip

    async def _stop_processes(self, replica: Replica) -> None:
        """The app first, then its sidecar (which drains what is in flight) or agent."""
        grace = self.options.grace
        if replica.app is not None:
            await stop(replica.app, grace)
        if replica.proxy is not None:
            await stop(replica.proxy, grace)
        if replica.agent is not None:
            await stop(replica.agent, grace)

    # --- stop -------------------------------------------------------------------------------

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

    def _environment(self) -> dict[str, str]:
        """The runner's environment, with the mark of this mesh: every process it starts
        carries ``TULLE_MESH_STATE`` (how ``tulle down --force`` and tests find them all)."""
        return {**os.environ, MESH_MARK: str(self.options.state.root.resolve())}

    def _save(self) -> None:
        self.options.state.write(self.state)


def _app_address(plan: ReplicaPlan) -> str:
    """The app's own first port: in loopback local mode a local process reaches the app there
    around its sidecar (docs/security.md, "Where STRICT really holds")."""
    return f"{plan.ip}:{plan.app_port(None)}" if plan.app_ports else ""


def _registrations(plan: ReplicaPlan, healthy: bool = True) -> list[dict[str, Any]]:
    """The registry entries of a replica: one per port it serves. A replica with a sidecar
    terminates mTLS (Istio's ``security.istio.io/tlsMode: istio`` label): clients speak mTLS to
    it; so does a proxyless one on its gRPC ports, whose ``xds=True`` grpcio server the control
    plane makes STRICT in the mesh (gRPC servers cannot be PERMISSIVE). Whether a library-mode
    app terminates TLS depends on its server (docs/security.md): its Workload's labels say."""
    workload = plan.workload
    in_mesh = dict(workload.labels, **{"security.istio.io/tlsMode": "istio"})
    return [
        {
            "service": workload.service_host, "namespace": workload.namespace,
            "address": plan.ip, "port": port, "servicePort": service_port,
            "protocol": protocol,
            "labels": in_mesh if _terminates_mtls(workload.mesh, protocol)
                      else dict(workload.labels),
            "serviceAccount": workload.service_account, "workload": workload.name,
            "healthy": healthy,
        }
        for port, service_port, protocol in plan.endpoints
    ]  # fmt: skip


def _terminates_mtls(mesh: str, protocol: str) -> bool:
    """Whether callers reach a port of a ``mesh`` workload over mTLS: every port of a sidecar's,
    a proxyless app's gRPC ports (its other ports are its own, plain text: a config warning)."""
    return mesh == "sidecar" or (mesh == "proxyless" and protocol == "GRPC")


def _identity(item: dict[str, Any]) -> dict[str, Any]:
    """The fields a DELETE of a registered endpoint needs."""
    service = str(item["service"])
    return {"service": service, "address": item["address"], "port": item["port"]}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
