"""The runner's control plane: picks its ports, starts it and waits for its API, and restarts it
when it exits (on the same ports and store, with backoff), then puts the registry right."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx

from tulle.local.plan import check_port_free, free_port
from tulle.local.processes import describe_exit, spawn, stop
from tulle.local.registrations import Registrations
from tulle.local.runtime import BACKOFF_FIRST, TULLE, restart_pause
from tulle.local.targets import TARGETS_FILE


class ControlPlaneKeeper(Registrations):
    """Starting the control plane and keeping it running."""

    async def _start_control_plane(self) -> None:
        """Pick the control plane's ports (kept for its restarts) and start it."""
        options = self.options
        for port, option in ((options.xds_port, "--xds-port"), (options.api_port, "--api-port")):
            if port:
                check_port_free(self.host, port, option)
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
                "--host", self.host, "--log-level", "warning",
                "--scrape-targets", str(options.state.root / TARGETS_FILE)]  # fmt: skip
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
            backoff = await restart_pause(
                self.stopping, backoff, began, self.echo, f"tulle up: the control plane {what}"
            )
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


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
