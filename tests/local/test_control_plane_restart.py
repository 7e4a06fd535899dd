"""A control plane that exits under ``tulle up`` (killed, crashed) is restarted on the same ports
and store, and what it missed while down is put right in its registry: the runner keeps which
replicas should be registered, and after the restart registers the missing ones and removes the
endpoints no replica has any more. Before, the mesh ran on without a control plane for good, and
a replica that restarted meanwhile was never registered again (its old endpoint stayed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from itertools import count
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import wait_until
from tests.local.conftest import start_mesh, tulle
from tests.local.test_lifecycle import config
from tulle.api import validate_paths
from tulle.local.plan import plan_replica
from tulle.local.runner import Replica, Runner, RunOptions
from tulle.local.state import ReplicaState, StateDir


def test_a_killed_control_plane_is_restarted_on_its_ports(tmp_path, state_dir):
    mesh = start_mesh(state_dir, config(tmp_path))
    before = mesh.status()
    api, old_pid = before["api"], before["control_plane_pid"]
    echo = next(r for r in before["replicas"] if r["replica"] == "echo-0")
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: mesh.status()["control_plane_restarts"] == 1, timeout=20)

    def answers() -> bool:
        try:
            return httpx.get(f"{api}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout=30)
    after = mesh.status()
    assert after["control_plane_pid"] != old_pid
    assert after["control_plane_last_exit"] == "killed by SIGKILL"
    assert after["api"] == api  # the same ports: the sidecars reconnect to it

    def reconnected() -> bool:
        status = tulle("proxy-status", "--server", api, "--token", mesh.token, check=False).stdout
        return "echo-0" in status and "echo-1" in status

    wait_until(reconnected, timeout=30)
    # The replicas ran on meanwhile (not restarted) and still serve.
    assert httpx.get(f"http://{echo['address']}/x", timeout=10).json()["name"] == "echo-0"
    assert all(r["restarts"] == 0 for r in after["replicas"])


ENDPOINTS = "/api/v1/endpoints"


def test_the_registry_is_put_right_after_a_restart(tmp_path: Path) -> None:
    asyncio.run(_put_right(tmp_path))


async def _put_right(tmp_path: Path) -> None:
    model = validate_paths([Path(config(tmp_path))]).model
    assert model is not None
    workload = next(w for w in model.workloads if w.name == "echo")
    ports = count(20000)
    runner = Runner(RunOptions([], StateDir(tmp_path / "state")), echo=lambda line: None)
    runner.state.api = "http://cp.test"
    replicas = []
    for index in (0, 1):
        plan = plan_replica(workload, index, ("cp.test:1", runner.state.api), lambda: next(ports))
        replicas.append(Replica(plan, ReplicaState("echo", plan.name, plan.mode)))
    runner.replicas = replicas
    echo0, echo1 = replicas
    (port0, _, _), (port1, _, _) = echo0.plan.endpoints[0], echo1.plan.endpoints[0]
    sent: list[tuple[str, dict[str, Any]]] = []
    registry = [
        {"service": "echo.default.svc.cluster.local", "address": "127.0.0.1", "port": port1,
         "workload": "echo"},  # echo-1 stopped while the control plane was down
        {"service": "echo.default.svc.cluster.local", "address": "127.0.0.1", "port": 19999,
         "workload": "echo"},  # echo-0's address before it restarted elsewhere
        {"service": "other.default.svc.cluster.local", "address": "127.0.0.1", "port": 30000,
         "workload": "other"},  # not this mesh's: left alone
    ]  # fmt: skip

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("All connection attempts failed", request=request)

    def up(request: httpx.Request) -> httpx.Response:
        assert request.url.path == ENDPOINTS
        if request.method == "GET":
            return httpx.Response(200, json={"items": registry})
        sent.append((request.method, json.loads(request.content)))
        return httpx.Response(200, json={})

    await runner.api.aclose()
    runner.api = httpx.AsyncClient(transport=httpx.MockTransport(down))
    await runner._register(echo0, "POST")  # echo-0 came back while the control plane was down
    assert echo0.registered  # the wish is kept though the call failed
    await runner.api.aclose()

    runner.api = httpx.AsyncClient(transport=httpx.MockTransport(up))
    await runner._put_registry_right()
    await runner.api.aclose()
    deleted = sorted(body["port"] for method, body in sent if method == "DELETE")
    posted = [body for method, body in sent if method == "POST"]
    assert deleted == sorted([port1, 19999])
    assert [(b["port"], b["workload"], b["service"]) for b in posted] == [
        (port0, "echo", "echo.default.svc.cluster.local")
    ]
