"""Real processes for end-to-end tests: the control plane (``tulle controlplane``), gRPC backends
and stock grpcio xDS clients, each a subprocess on loopback, all stopped after each test."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tulle.local import plan
from tulle.security.tokens import BootstrapTokens

HERE = Path(__file__).parent
EXAMPLES = HERE.parent.parent / "examples"
BIN = Path(sys.executable).parent
NODE = "proxyless~127.0.0.1~client-0.default~default.svc.cluster.local"


WORKLOAD = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec:
  command: [python3, app.py]
  ports: [{{name: http, port: 8080}}]
  mesh: library
"""


def _stop(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass
class ControlPlane:
    """A running ``tulle controlplane`` and helpers to drive it over its API."""

    proc: subprocess.Popen[str]
    xds_port: int
    http_port: int
    state_dir: Path
    config_dir: Path
    host: str = "127.0.0.1"
    secure_xds_port: int = 0

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def token(self) -> str:
        """The admin token the control plane made in its state directory."""
        return (self.state_dir / "admin-token").read_text().strip()

    @property
    def auth(self) -> dict[str, str]:
        """The header that authenticates a request to the API as the admin."""
        return {"authorization": f"Bearer {self.token}"}

    def apply(self, text: str, expect_ok: bool = True) -> dict[str, Any]:
        response = httpx.post(
            f"{self.api}/api/v1/resources",
            content=text.encode(),
            headers={"x-tulle-filename": "test.yaml", **self.auth},
            timeout=10,
        )
        data: dict[str, Any] = response.json()
        if expect_ok:
            assert response.status_code == 200, data
        return data

    def workload_token(self, service: str, pod: str) -> Path:
        """A library app's identity as ``tulle up`` gives it: a Workload (service account
        ``service``) that says it serves ``service``, and a bootstrap token for replica ``pod``,
        with which it registers itself; the token file's path."""
        self.apply(WORKLOAD.format(name=service))
        return BootstrapTokens(self.state_dir).issue("default", service, f"{pod}.default")

    def register(self, **fields: Any) -> None:
        response = httpx.post(
            f"{self.api}/api/v1/endpoints", json=fields, headers=self.auth, timeout=10
        )
        assert response.status_code == 200, response.text

    def deregister(self, **fields: Any) -> None:
        response = httpx.request(
            "DELETE", f"{self.api}/api/v1/endpoints", json=fields, headers=self.auth, timeout=10
        )
        assert response.status_code == 200, response.text

    def proxy_status(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(
            f"{self.api}/api/v1/proxy-status", headers=self.auth, timeout=10
        ).json()
        return data

    def bootstrap(self, node_id: str = NODE) -> str:
        return json.dumps(
            {
                "xds_servers": [
                    {
                        "server_uri": f"127.0.0.1:{self.xds_port}",
                        "channel_creds": [{"type": "insecure"}],
                        "server_features": ["xds_v3"],
                    }
                ],
                "node": {"id": node_id},
            }
        )


def start_control_plane(
    state_dir: Path,
    config_dir: Path,
    xds_port: int = 0,
    http_port: int = 0,
    host: str = "127.0.0.1",
    stderr: Any = None,
    insecure_xds: bool = True,
    secure_xds_port: int = 0,
    extra: tuple[str, ...] = (),
) -> ControlPlane:
    """Start ``tulle controlplane`` and wait until its API answers; ``stderr`` (a file, say) gets
    its log, which otherwise goes to the test's. ``insecure_xds=False``: the secure port only;
    ``extra``: more options (``--registry kubernetes``...)."""
    proc = subprocess.Popen(
        [
            str(BIN / "tulle"), "controlplane", "-f", str(config_dir),
            "--state-dir", str(state_dir),
            "--xds-port", str(xds_port), "--secure-xds-port", str(secure_xds_port),
            *(["--insecure-xds"] if insecure_xds else []),
            "--http-port", str(http_port), "--host", host, "--log-level", "warning", *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("tulle controlplane:"):
        _stop(proc)
        raise AssertionError(f"control plane did not start: {line!r}")
    # "tulle controlplane: xDS on H:PORT, secure xDS on H:PORT, API on http://H:PORT"
    xds = int(line.split("xDS on ")[1].split(",")[0].rsplit(":", 1)[1])
    secure = int(line.split("secure xDS on ")[1].split(",")[0].rsplit(":", 1)[1])
    http = int(line.rsplit(":", 1)[1])
    plane = ControlPlane(proc, xds, http, state_dir, config_dir, host, secure)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{plane.api}/healthz", timeout=1).status_code == 200:
                return plane
        except httpx.HTTPError:
            time.sleep(0.05)
    _stop(proc)
    raise AssertionError("control plane API did not come up")


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    plane = start_control_plane(tmp_path / "state", config_dir)
    yield plane
    _stop(plane.proc)


@dataclass
class Processes:
    """Backends started by a test, stopped at its end."""

    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def greeter(
        self, name: str, fail_rate: float = 0.0, delay: float = 0.0, grace: float = 0.5
    ) -> int:
        script = EXAMPLES / "grpc" / "greeter_server.py"
        return self.start_backend(script, name, fail_rate, delay, "--grace", str(grace))

    def start_backend(
        self, script: Path, name: str, fail_rate: float = 0.0, delay: float = 0.0, *extra: str
    ) -> int:
        """A backend program taking --name, --fail-rate and --delay that prints READY <port>."""
        proc = subprocess.Popen(
            [sys.executable, str(script), "--name", name, "--fail-rate", str(fail_rate),
             "--delay", str(delay), *extra],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        return int(line.split()[1])

    def http_backend(
        self,
        name: str,
        fail_rate: float = 0.0,
        delay: float = 0.0,
        port: int = 0,
        env: dict[str, str] | None = None,
        gather: int = 0,
    ) -> int:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "http_backend.py"), "--name", name,
             "--fail-rate", str(fail_rate), "--delay", str(delay), "--port", str(port),
             "--gather", str(gather)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        return int(line.split()[1])

    def sidecar(
        self, plane: ControlPlane, pod: str = "client-0", log: Path | None = None, *extra: str
    ) -> Sidecar:
        node = f"sidecar~127.0.0.1~{pod}.default~default.svc.cluster.local"
        output = open(log, "w") if log else None  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [str(BIN / "tulle"), "proxy", "--xds", f"127.0.0.1:{plane.xds_port}",
             "--node-id", node, "--admin-port", "0", "--http-proxy-port", "0", *extra],
            stdout=output or subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        if output is not None:
            output.close()
        self.started.append(proc)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("tulle proxy: admin"), line
        admin = int(line.split("admin 127.0.0.1:")[1].split(",")[0])
        http_proxy = int(line.rsplit(":", 1)[1])
        sidecar = Sidecar(proc, admin, http_proxy, node)
        wait_until(sidecar.ready, timeout=15)
        return sidecar

    def library_app(self, plane: ControlPlane, pod: str, service: str, log: Path) -> LibraryApp:
        """``examples/library/app.py`` as workload ``pod`` serving ``service`` (port 8080), its
        metrics on a port of their own and its access log in ``log``."""
        node = f"library~127.0.0.1~{pod}.default~default.svc.cluster.local"
        app = LibraryApp(free_port(), free_port(), node)
        token = plane.workload_token(service, pod)
        env = {
            **os.environ, "TULLE_XDS_ADDRESS": f"127.0.0.1:{plane.xds_port}",
            "TULLE_SERVER": plane.api, "TULLE_NODE_ID": node, "TULLE_SERVICE": service,
            "TULLE_SERVICE_PORT": "8080", "PORT": str(app.port),
            "TULLE_METRICS_PORT": str(app.metrics_port), "TULLE_TOKEN_FILE": str(token),
        }  # fmt: skip
        with open(log, "w") as output:
            app.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLES / "library" / "app.py")],
                stdout=output, stderr=subprocess.STDOUT, text=True, env=env,
            )  # fmt: skip
        self.started.append(app.proc)
        wait_until(app.serving, timeout=15)
        return app

    def stop_all(self) -> None:
        for proc in self.started:
            _stop(proc)


@dataclass
class Sidecar:
    """A running ``tulle proxy`` with its HTTP forward-proxy listener."""

    proc: subprocess.Popen[str]
    admin_port: int
    http_proxy_port: int
    node: str

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.http_proxy_port}"

    def admin(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10)

    def ready(self) -> bool:
        try:
            return self.admin("/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(proxy=self.proxy_url, timeout=30, **kwargs)


@dataclass
class LibraryApp:
    """A running library-mode app (``examples/library/app.py``)."""

    port: int
    metrics_port: int
    node: str
    proc: subprocess.Popen[str] | None = None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10, **kwargs)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text

    def serving(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, "the library app exited"
        try:  # a connection, not a request: requests pass the app's inbound rate limit
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop_all()


class Client:
    """A stock grpcio xDS client process; its results arrive as they happen."""

    def __init__(self, bootstrap: str, target: str, *args: str) -> None:
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": bootstrap, "GRPC_VERBOSITY": "NONE"}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "xds_client.py"), "--target", target, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.results: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.results.append(json.loads(line))

    def wait(self, timeout: float = 120) -> list[dict[str, Any]]:
        self.proc.wait(timeout)
        self._reader.join(timeout)
        _stop(self.proc)
        return self.results

    def stop(self) -> list[dict[str, Any]]:
        _stop(self.proc)
        self._reader.join(5)
        return self.results


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    started: list[Client] = []
    yield started
    for client in started:
        client.stop()


def run_client(plane: ControlPlane, target: str, *args: str) -> list[dict[str, Any]]:
    """Run a client to completion and return its results."""
    return Client(plane.bootstrap(), target, *args).wait()


def free_port() -> int:
    """A port nothing listens on now (for a process told its port up front): local mode's
    allocator, which hands each port out once and keeps below the ephemeral range."""
    return plan.free_port()


def wait_until(condition: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true (a state to reach, not a delay)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


Session = Callable[[threading.Event, "collections.Counter[str]"], None]


def sigterm_under_load(
    proc: subprocess.Popen[str], session: Session, clients: int, answered: str
) -> collections.Counter[str]:
    """Runs ``clients`` threads of ``session(stop, outcomes)`` — each a client sending without a
    pause on its own connection and counting what it got, ``refused`` for a connection the
    proxy refused — sends ``proc`` SIGTERM once ``answered`` was counted 100 times, waits for it
    to exit 0 and for every client to have been refused; the outcomes."""
    outcomes: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    threads = [threading.Thread(target=session, args=(stop, outcomes)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: outcomes[answered] >= 100)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        wait_until(lambda: outcomes["refused"] >= clients)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return outcomes


def _children(pid: int) -> list[tuple[int, str]]:
    """Live (not zombie) direct children of ``pid``: ``(pid, command line)``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid) and not fields.get("State", "").startswith(
            "Z"
        ):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append((int(entry.name), command.strip()))
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Every process a test starts is gone when it ends (fixtures stop what they start)."""
    before = {pid for pid, _ in _children(os.getpid())}
    yield
    deadline = time.monotonic() + 5
    left = [c for c in _children(os.getpid()) if c[0] not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [c for c in _children(os.getpid()) if c[0] not in before]
    assert left == [], f"processes left running: {left}"


def register(plane: ControlPlane, processes: Processes, **backends: dict) -> dict[str, int]:
    """Start HTTP backends (name → options) and register them as endpoints of ``web``."""
    ports = {}
    for name, given in backends.items():
        options = dict(given)
        version = options.pop("version", name)
        port = processes.http_backend(name, **options)
        plane.register(
            service="web", address="127.0.0.1", port=port, servicePort=8080,
            labels={"version": version},
        )  # fmt: skip
        ports[name] = port
    return ports


def synced(plane: ControlPlane, node_id: str) -> bool:
    """No change is waiting for its snapshot, and the node has ACKed the current version of
    every type it subscribes to."""
    status = plane.proxy_status()
    if status["pending"]:
        return False
    for node in status["nodes"]:
        if node["node"] == node_id:
            return all(t["current"] for t in node["types"].values())
    return False
