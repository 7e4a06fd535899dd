"""The sidecar proxy from outside: a real control plane, real HTTP backends, ``tulle proxy``, and
httpx / curl / raw sockets as the app. The process: config swaps and SIGTERM under load lose no
request, it serves without the control plane and resyncs, it carries only the data plane (and
the build under test), and bad options are refused by name."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    BIN,
    _stop,
    register,
    sigterm_under_load,
    start_control_plane,
    synced,
    wait_until,
)
from tests.e2e.sidecar_http import (
    WEB,
    routes,
    rule,
)


def test_config_swap_under_load_loses_no_request(control_plane, processes):
    register(control_plane, processes, a={"version": "v1"}, b={"version": "v2"})
    rule(
        control_plane,
        "{}",
        "  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]",
    )
    routes(control_plane, "    - route: [{destination: {host: web, subset: v1}}]")
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with sidecar.client() as client:
            while not stop.is_set():
                results.append(client.get(f"{WEB}/").status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for subset in ("v2", "v1", "v2", "v1", "v2"):
        routes(control_plane, f"    - route: [{{destination: {{host: web, subset: {subset}}}}}]")
        wait_until(lambda: synced(control_plane, sidecar.node))
    stop.set()
    for thread in threads:
        thread.join()
    assert len(results) > 200
    assert set(results) == {200}


def test_sigterm_under_load_finishes_in_flight_requests(control_plane, processes):
    # Eight requests the backend holds until told (a delay of 0.3 s used to be meant to keep
    # all eight in flight at once; on a busy machine the first were answered before the last
    # were sent), SIGTERM, then the backend answers them while the sidecar drains.
    ports = register(control_plane, processes, held={})
    sidecar = processes.sidecar(control_plane)
    results: list[int] = []

    def call() -> None:
        with sidecar.client() as client:
            results.append(client.get(f"{WEB}/held").status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: sum(c["requests"] for c in sidecar.admin("/clusters").json()["clusters"]) == 8
    )
    sidecar.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: sidecar.admin("/ready").status_code == 503)  # draining, eight in flight
    httpx.get(f"http://127.0.0.1:{ports['held']}/release", timeout=10)
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert sidecar.proc.wait(10) == 0


def test_sigterm_under_steady_load_loses_no_request(control_plane, processes):
    # Keep-alive clients sending without a pause: every request the sidecar read is answered,
    # the last one on each connection with Connection: close; after that, new connections are
    # refused (never read), which a client can tell apart and retry elsewhere.
    register(control_plane, processes, a={"delay": 0.01})
    sidecar = processes.sidecar(control_plane, "client-0", None, "--drain-seconds", "5")

    def session(stop: threading.Event, outcomes: collections.Counter[str]) -> None:
        with sidecar.client() as client:
            while not stop.is_set():
                try:
                    status = client.get(f"{WEB}/").status_code
                    outcomes["ok" if status == 200 else str(status)] += 1
                except httpx.ConnectError:
                    outcomes["refused"] += 1
                    time.sleep(0.02)
                except httpx.HTTPError as error:
                    outcomes[f"{type(error).__name__}: {error}"] += 1

    outcomes = sigterm_under_load(sidecar.proc, session, clients=6, answered="ok")
    assert set(outcomes) == {"ok", "refused"}, outcomes


def test_the_sidecar_serves_without_the_control_plane_and_resyncs_when_it_returns(
    control_plane, processes
):
    backend = processes.http_backend("a")
    control_plane.apply(
        f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{{number: 8080, protocol: HTTP, name: http}}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend}}}}}]
"""
    )
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    _stop(control_plane.proc)
    wait_until(lambda: not sidecar.admin("/config_dump").json()["connected"])
    with sidecar.client() as client:  # the last good config serves on
        assert {client.get(f"{WEB}/").status_code for _ in range(20)} == {200}
    restarted = start_control_plane(
        control_plane.state_dir, control_plane.config_dir,
        control_plane.xds_port, control_plane.http_port,
    )  # fmt: skip
    control_plane.proc = restarted.proc  # stopped by the fixture
    routes(
        control_plane,
        "    - route: [{destination: {host: web}}]\n"
        "      headers: {response: {set: {x-config: after-restart}}}",
    )
    wait_until(lambda: synced(control_plane, sidecar.node), timeout=30)
    with sidecar.client() as client:
        answer = client.get(f"{WEB}/")
    assert answer.status_code == 200
    assert answer.headers["x-config"] == "after-restart"


def test_the_sidecar_process_carries_only_the_data_plane(control_plane, processes):
    register(control_plane, processes, a={})
    sidecar = processes.sidecar(control_plane)
    pid = sidecar.proc.pid  # `tulle proxy` replaced itself: same process
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert command[1:4] == [b"-P", b"-m", b"tulle.proxy"]
    libraries = Path(f"/proc/{pid}/maps").read_text()
    assert "_pydantic_core" not in libraries
    assert "cygrpc" not in libraries
    assert "uvloop" in libraries  # the check reads the real mappings
    # `make test` runs this file a second time with the compiled build first on PYTHONPATH:
    # each run checks that the sidecar runs the build it is meant to test.
    compiled = os.environ.get("TULLE_EXPECT_COMPILED") == "1"
    assert ("__mypyc" in libraries) == compiled, f"compiled build expected: {compiled}"
    with sidecar.client() as client:
        assert client.get(f"{WEB}/").status_code == 200


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--node-id", "gateway~1.2.3.4~a.b~b.svc", "--node-id:"),
        ("--xds", "control-plane", "--xds: 'control-plane' is not HOST:PORT"),
        ("--mark", "lots", "--mark: 'lots' is not a number"),
        ("--log-level", "chatty", "--log-level: 'chatty' is not one of"),
        ("--admin-host", "0.0.0.0", "--admin-host: '0.0.0.0' is not a loopback address"),
        ("--server", "cp:15014", "--server: 'cp:15014' is not an http:// or https:// URL"),
    ],
)
def test_bad_proxy_options_are_refused_by_name(option, value, reason):
    node = "sidecar~127.0.0.1~a-0.default~default.svc.cluster.local"
    args = {"--node-id": node, "--xds": "127.0.0.1:1", option: value}
    result = subprocess.run(
        [str(BIN / "tulle"), "proxy", *(p for item in args.items() for p in item)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert reason in result.stderr
