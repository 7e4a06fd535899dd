"""A replica's life under the runner: start its processes (the sidecar or the proxyless
``tulle agent`` first, then the app), probe it until ready, register it, and when a process
exits deregister and stop the rest and restart it with backoff; on fresh ports outside pods."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

import httpx

from tulle.local.plan import ReplicaPlan, plan_replica
from tulle.local.pods import OUTBOUND_PORT, PROBE_HEADERS, SIDECAR_MARK, probe_in_pod
from tulle.local.processes import describe_exit, spawn, stop
from tulle.local.proxyless import agent_args, first_certificate, write_bootstrap
from tulle.local.registrations import Registrations
from tulle.local.runtime import (
    BACKOFF_FIRST,
    TULLE,
    Replica,
    app_address,
    restart_pause,
)
from tulle.security.material import BUNDLE_FILE
from tulle.security.tokens import BootstrapTokens


class ReplicaSupervisor(Registrations):
    """Running each replica: started, probed, registered, restarted, stopped."""

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
            backoff = await restart_pause(
                self.stopping, backoff, began, self.echo, f"  {replica.plan.name:<22} {what}"
            )

    def _replan(self, replica: Replica) -> None:
        plan = replica.plan
        control_plane = (self.state.xds, self.state.api)
        replica.plan = plan_replica(plan.workload, plan.index, control_plane)
        replica.status.address = self._address(replica.plan)
        replica.status.app = app_address(replica.plan)

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
                    "--stats-port", str(ports.stats), "--server", self.state.api,
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
            token = state.admin_token(plan.name).resolve()  # the library writes it (0600)
            env["TULLE_ADMIN_TOKEN_FILE"] = str(token)
            status.admin_port, status.admin_token_file = plan.admin_port, str(token)
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
                response = await self.http.get(url, timeout=timeout, headers=PROBE_HEADERS)
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

    async def _stop_processes(self, replica: Replica) -> None:
        """The app first, then its sidecar (which drains what is in flight) or agent."""
        grace = self.options.grace
        if replica.app is not None:
            await stop(replica.app, grace)
        if replica.proxy is not None:
            await stop(replica.proxy, grace)
        if replica.agent is not None:
            await stop(replica.agent, grace)
