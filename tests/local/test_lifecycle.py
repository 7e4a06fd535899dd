"""``tulle up``'s lifecycle on a small mesh: Ctrl-C and ``tulle down`` stop everything, a killed
``tulle up`` orphans nothing, bad config is refused with file and line, and a crash loop shows
in ``tulle status``."""

from __future__ import annotations

import signal
import socket
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from tests.e2e.conftest import wait_until
from tests.local.conftest import (
    REPO,
    TULLE,
    Mesh,
    assert_nothing_left,
    foreground,
    mesh_processes,
    start_mesh,
    tulle,
)

ECHO = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: echo}
spec:
  command: [python3, tests/e2e/http_backend.py]
  args: [--name, $(TULLE_REPLICA), --port, $(PORT)]
  replicas: 2
  ports: [{name: http, port: 8080}]
  readiness: {httpGet: {path: /ready}}
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: bare}
spec:
  command: [python3, tests/e2e/http_backend.py, --name, bare, --port, $(PORT)]
  mesh: none
  ports: [{name: http, port: 9090}]
"""


def config(tmp_path: Path, text: str = ECHO) -> str:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    return str(path)


def up(state_dir: Path, config_file: str) -> AbstractContextManager[subprocess.Popen[str]]:
    """``tulle up`` in the foreground on ``config_file``, once the mesh is ready."""
    return foreground("-f", config_file, "--state-dir", str(state_dir), "--api-port", "0",
                      "--xds-port", "0", "--grace", "3")  # fmt: skip


def test_a_mesh_starts_serves_and_stops_with_tulle_down(tmp_path, state_dir):
    mesh = start_mesh(state_dir, config(tmp_path))
    replicas = {r["replica"]: r for r in mesh.status()["replicas"]}
    assert set(replicas) == {"echo-0", "echo-1", "bare-0"}
    assert replicas["bare-0"]["mode"] == "none"
    assert replicas["bare-0"]["proxy_pid"] is None  # no sidecar for a bare replica
    # Callers reach echo through its sidecar's inbound listener; the app got $(PORT) expanded.
    answer = httpx.get(f"http://{replicas['echo-1']['address']}/hello", timeout=10).json()
    assert (answer["name"], answer["path"]) == ("echo-1", "/hello")
    endpoints = httpx.get(
        f"{mesh.status()['api']}/api/v1/endpoints", headers=mesh.auth, timeout=10
    ).json()
    registered = {(e["workload"], f"{e['address']}:{e['port']}") for e in endpoints["items"]}
    assert registered == {(r["workload"], r["address"]) for r in replicas.values()}
    assert mesh_processes(state_dir)  # the mark the leftover check relies on is there
    mesh.down()
    assert_nothing_left(state_dir)
    assert not (state_dir / "state.json").exists()
    assert "no mesh runs" in tulle("status", "--state-dir", str(state_dir), check=False).stderr


def test_ctrl_c_stops_everything_cleanly(tmp_path, state_dir):
    with up(state_dir, config(tmp_path)) as proc:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert proc.stdout is not None
        assert "tulle up: stopping" in proc.stdout.read()
    assert_nothing_left(state_dir)


def test_killing_tulle_up_orphans_no_process(tmp_path, state_dir):
    with up(state_dir, config(tmp_path)) as proc:
        assert len(mesh_processes(state_dir)) == 6  # control plane, 2 x (app + sidecar), bare
        proc.kill()  # SIGKILL: no chance to clean up; the kernel ends the children
        proc.wait()
    assert_nothing_left(state_dir)
    status = tulle("status", "--state-dir", str(state_dir), check=False)
    assert "the runner" in status.stderr  # the stale state says so
    assert "is gone" in status.stderr
    forced = tulle("down", "--force", "--state-dir", str(state_dir))
    assert "cleared the state" in forced.stdout
    assert not (state_dir / "state.json").exists()


def test_bad_config_is_refused_with_file_and_line(tmp_path, state_dir):
    bad = config(tmp_path, ECHO.replace("replicas: 2", "replicas: -1"))
    result = tulle("up", "-f", bad, "--state-dir", str(state_dir), "--api-port", "0",
                   "--xds-port", "0", check=False)  # fmt: skip
    assert result.returncode == 1
    assert (
        f"{bad}:7: ERROR Workload default/echo: spec.replicas: must be greater than or equal "
        "to 0, got -1"
    ) in result.stderr
    assert_nothing_left(state_dir)


def test_a_taken_api_port_is_refused_naming_it(tmp_path, state_dir):
    """Another control plane on the port would answer in this one's place: refused first."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = tulle("up", "-f", config(tmp_path, ECHO), "--state-dir", str(state_dir),
                       "--api-port", port, "--xds-port", "0", check=False)  # fmt: skip
    assert result.returncode == 1
    assert f"127.0.0.1:{port} (--api-port) is taken" in result.stderr
    assert "pass --api-port 0 for any free port" in result.stderr
    assert_nothing_left(state_dir)


def test_a_crash_loop_shows_in_status_with_backoff(tmp_path, state_dir):
    crashing = (
        ECHO
        + """\
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: crasher}
spec:
  command: [python3, -c, "import sys; sys.exit(3)"]
  mesh: none
"""
    )
    # The mesh never gets ready (crasher never is): start it in the foreground and read status.
    said = tmp_path / "up.out"
    with open(said, "w") as output:
        proc = subprocess.Popen(
            [*TULLE, "up", "-f", config(tmp_path, crashing), "--state-dir", str(state_dir),
             "--api-port", "0", "--xds-port", "0", "--grace", "3"],
            cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    mesh = Mesh(state_dir)
    try:
        wait_until((state_dir / "state.json").exists, timeout=20)
        wait_until(lambda: mesh.replica("crasher-0")["restarts"] >= 3, timeout=30)
        crasher = mesh.replica("crasher-0")
        assert crasher["last_exit"] == "exit 3"
        assert crasher["ready"] is False
        table = tulle("status", "--state-dir", str(state_dir)).stdout
        assert "exit 3" in table
        # The backoff doubles from 1 s (the runner says each wait as it decides it).
        waits = [line.rsplit(" ", 1)[1] for line in said.read_text().splitlines()
                 if line.strip().startswith("crasher-0") and "restarting in" in line]  # fmt: skip
        assert waits[:3] == ["1s", "2s", "4s"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert_nothing_left(state_dir)
