"""Local-mode tests run ``tulle up`` as a user does (real processes, real config) and check
from outside: responses, ``tulle status``, metrics. After each mesh, no process of it is left:
every process ``tulle up`` starts carries ``TULLE_MESH_STATE=<state dir>`` in its environment,
and the fixture scans /proc for it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parent.parent.parent
TULLE = [sys.executable, "-m", "tulle"]


def mesh_processes(state_dir: Path) -> list[tuple[int, str]]:
    """Live processes marked as belonging to the mesh of ``state_dir``: ``(pid, command)``."""
    mark = f"TULLE_MESH_STATE={state_dir.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if mark in environ.split(b"\0") and state != "Z":
            found.append((int(entry.name), command.strip()))
    return found


def runner_processes(state_dir: Path) -> list[int]:
    """``tulle up`` processes for ``state_dir`` (the runner is not marked: it sets the mark)."""
    wanted = str(state_dir)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in args]
        if "up" in text and wanted in text and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def tulle(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*TULLE, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, check=False)  # fmt: skip
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@contextlib.contextmanager
def foreground(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``tulle up ARGS`` in the foreground, as in a terminal, once it says its replicas are
    ready (its output so far in the error if it ends before). On the way out, whether the test
    passed or not, it is killed if still running, reaped and its pipe closed: a pipe left open
    is a ResourceWarning in whichever later test the garbage collector runs."""
    proc = subprocess.Popen(
        [*TULLE, "up", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        said = []
        for line in proc.stdout:
            said.append(line)
            if "replicas ready" in line:
                break
        else:
            raise AssertionError(f"tulle up ended ({proc.wait()}) before the mesh was ready: "
                                 f"{''.join(said)}")  # fmt: skip
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Mesh:
    """A mesh started with ``tulle up -d`` from ``state_dir``."""

    state_dir: Path

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            tulle("status", "--state-dir", str(self.state_dir), "-o", "json").stdout
        )
        return data

    @property
    def token(self) -> str:
        """The admin token of the mesh's control plane."""
        return (self.state_dir / "controlplane" / "admin-token").read_text().strip()

    @property
    def auth(self) -> dict[str, str]:
        """The header that authenticates a request to the mesh's control plane as the admin."""
        return {"authorization": f"Bearer {self.token}"}

    def replica(self, name: str) -> dict[str, Any]:
        return next(r for r in self.status()["replicas"] if r["replica"] == name)

    def address(self, workload: str) -> str:
        return next(r["address"] for r in self.status()["replicas"] if r["workload"] == workload)

    def down(self) -> None:
        tulle("down", "--state-dir", str(self.state_dir))


def start_mesh(state_dir: Path, *files: str, pods: bool = False) -> Mesh:
    args = ["up", "-d", "--state-dir", str(state_dir), "--api-port", "0", "--xds-port", "0",
            "--grace", "3"]  # fmt: skip
    if pods:
        args.append("--pods")
    for path in files:
        args += ["-f", path]
    tulle(*args)
    return Mesh(state_dir)


def assert_nothing_left(state_dir: Path) -> None:
    """No process of the mesh is left (waiting a little for the kernel to reap them)."""
    deadline = time.monotonic() + 10
    left = mesh_processes(state_dir) + [(pid, "tulle up") for pid in runner_processes(state_dir)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = mesh_processes(state_dir)
        left += [(pid, "tulle up") for pid in runner_processes(state_dir)]
    for pid, _ in left:  # leave the machine clean for the next test, then fail
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes left running: {left}"


def network_leftovers() -> list[str]:
    """Namespaces, links and hosts files a local mesh made (``tulle-…``, ``tl…``)."""
    namespaces = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    netns_etc = Path("/etc/netns")
    hosts = [p.name for p in netns_etc.iterdir()] if netns_etc.exists() else []
    found = [line.split()[0] for line in namespaces.splitlines() if line.startswith("tulle-")]
    found += [line.split(": ")[1] for line in links.splitlines() if ": tl" in line]
    found += [name for name in hosts if name.startswith("tulle-")]
    return found


def workload(
    name: str, command: str, ports: str = "[{name: http, port: 8080}]", mesh: str = ""
) -> str:
    """A ``Workload`` document (ready on ``GET /ready``) running ``command`` (a flow sequence,
    ``[python3, ...]``), for a test's mesh YAML."""
    mode = f"\n  mesh: {mesh}" if mesh else ""
    return (
        f"apiVersion: tulle.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}}}\n"
        f"spec:\n  command: {command}{mode}\n  ports: {ports}\n"
        "  readiness: {httpGet: {path: /ready}}\n---\n"
    )


def backend_workload(name: str) -> str:
    """A ``Workload`` of the test backend (tests/e2e/http_backend.py) named ``name``."""
    return workload(name, f"[python3, tests/e2e/http_backend.py, --name, {name}, --port, $(PORT)]")


@contextlib.contextmanager
def running_mesh(root: Path, config: str, pods: bool = False) -> Iterator[Mesh]:
    """A mesh of ``config`` (written to ``root``/mesh.yaml) started with ``tulle up -d``; stopped
    afterwards, and checked gone: no process left, and with ``pods`` no network namespace."""
    if pods:
        assert network_leftovers() == []
    (root / "mesh.yaml").write_text(config)
    state = root / "state"
    try:
        yield start_mesh(state, str(root / "mesh.yaml"), pods=pods)
    finally:
        tulle("down", "--state-dir", str(state), check=False)
        if pods:
            tulle("down", "--force", "--state-dir", str(state), check=False)
        assert_nothing_left(state)
        if pods:
            assert network_leftovers() == []


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose mesh is stopped, and checked gone, after the test."""
    path = tmp_path / "state"
    yield path
    tulle("down", "--state-dir", str(path), check=False)
    assert_nothing_left(path)
