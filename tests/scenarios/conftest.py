"""The parity suite: each scenario runs through a sidecar (``tulle proxy`` as the HTTP proxy of
an httpx client), through the library (``tulle.client`` in this process), and through proxyless
gRPC (a stock grpcio client on ``xds:///`` targets, calling gRPC backends), on the same control
plane, and must see the same outcome — or, for proxyless gRPC, the documented gap."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
import httpx
import pytest

import tulle.client
from tests.e2e.conftest import (  # noqa: F401 - fixtures used by the scenarios
    ControlPlane,
    Processes,
    control_plane,
    no_process_left_behind,
    processes,
    synced,
    wait_until,
)

MODES = ["sidecar", "library", "proxyless"]
HERE = Path(__file__).parent
_pods = itertools.count()


@dataclass(frozen=True)
class Outcome:
    """What a caller saw: the status, which backend answered ("-" for the mesh), and the mesh's
    reason when the mesh answered itself (x-tulle-error / MeshError.reason). Not compared: what
    the backend saw (path and request headers) and the response headers."""

    status: int
    backend: str
    reason: str = ""
    path: str = field(default="", compare=False)
    sent: dict[str, str] = field(default_factory=dict, compare=False)
    headers: dict[str, str] = field(default_factory=dict, compare=False)
    peer: str = field(default="", compare=False)  # the caller's identity the backend was told


def peer_of(sent: dict[str, str]) -> str:
    """The caller's SPIFFE id in the X-Forwarded-Client-Cert a backend received ("" without)."""
    for part in sent.get("x-forwarded-client-cert", "").split(";"):
        if part.startswith("URI="):
            return part[4:]
    return ""


def http_outcome(response: httpx.Response, reason: str = "") -> Outcome:
    """An HTTP response as an Outcome (the backends echo what they received as JSON)."""
    backend = response.headers.get("x-backend", "-")
    seen: dict[str, Any] = {}
    if backend != "-" and response.headers.get("content-type") == "application/json":
        seen = response.json()
    sent = seen.get("headers", {})
    return Outcome(response.status_code, backend, reason, seen.get("path", ""), sent,
                   dict(response.headers), peer_of(sent))  # fmt: skip


class Caller(Protocol):
    """Sends requests through the mesh in one mode; safe to use from several threads."""

    node: str

    def get(
        self, url: str, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> Outcome: ...

    def close(self) -> None: ...


class SidecarCaller:
    """An httpx client using a sidecar as its HTTP proxy (as HTTP_PROXY makes apps do)."""

    def __init__(
        self, plane: ControlPlane, procs: Processes, pod: str | None = None, *extra: str
    ) -> None:
        """``extra``: more ``tulle proxy`` options (a token and the secure xDS port, say)."""
        self.sidecar = procs.sidecar(plane, pod or f"caller-{next(_pods)}", None, *extra)
        self.node = self.sidecar.node
        self.client = self.sidecar.client()

    def get(self, url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Outcome:
        response = self.client.get(url, headers=headers, timeout=timeout)
        return http_outcome(response, response.headers.get("x-tulle-error", ""))

    def close(self) -> None:
        self.client.close()


class LibraryCaller:
    """``tulle.client.Client`` in this process."""

    def __init__(self, plane: ControlPlane) -> None:
        self.node = f"library~127.0.0.1~caller-{next(_pods)}.default~default.svc.cluster.local"
        tulle.client.configure(
            xds_address=f"127.0.0.1:{plane.xds_port}", node_id=self.node, access_log=False
        )
        tulle.client.wait_ready(15)
        self.client = tulle.client.Client(timeout=30)

    def get(self, url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Outcome:
        try:
            response = self.client.get(url, headers=headers, timeout=timeout)
        except tulle.client.MeshError as error:
            return Outcome(error.status, "-", error.reason)
        return http_outcome(response)

    def close(self) -> None:
        self.client.close()


# gRPC status → the HTTP status a sidecar answers with for it (for one Outcome across modes).
HTTP_FOR_GRPC = {"UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "RESOURCE_EXHAUSTED": 429,
                 "NOT_FOUND": 404, "PERMISSION_DENIED": 403, "INTERNAL": 500}  # fmt: skip


class ProxylessCaller:
    """A stock grpcio client process (``tests/scenarios/grpc_caller.py``) calling the URL's path
    as the method on ``xds:///host:port``; an Outcome's reason is grpcio's own status detail."""

    def __init__(self, plane: ControlPlane, env: dict[str, str] | None = None) -> None:
        """``env``: the caller's environment when it has an identity (a ``tulle bootstrap grpc``
        bootstrap and the agent's files): it then calls with ``grpc.xds_channel_credentials``."""
        command = [sys.executable, str(HERE / "grpc_caller.py")]
        if env is None:
            self.node = (
                f"proxyless~127.0.0.1~caller-{next(_pods)}.default~default.svc.cluster.local"
            )
            env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": plane.bootstrap(self.node),
                   "GRPC_VERBOSITY": "NONE"}  # fmt: skip
        else:
            self.node = json.loads(env["GRPC_XDS_BOOTSTRAP_CONFIG"])["node"]["id"]
            command.append("--xds-credentials")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._arrived = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            reply = json.loads(line)
            with self._arrived:
                self._replies[reply["id"]] = reply
                self._arrived.notify_all()

    def get(self, url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Outcome:
        parts = urlsplit(url)
        command = {"target": f"xds:///{parts.hostname}:{parts.port}", "headers": headers or {},
                   "path": parts.path or "/", "timeout": timeout}  # fmt: skip
        with self._lock:
            command["id"] = call_id = next(self._ids)
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
            self._arrived.wait_for(lambda: call_id in self._replies, timeout=timeout + 10)
            reply = self._replies.pop(call_id)
        if reply["ok"]:
            seen = json.loads(reply["reply"])
            sent = seen["headers"]  # an xds=True backend says what the handshake showed
            peer = seen.get("peer") or peer_of(sent)
            return Outcome(200, seen["name"], "", seen["path"], sent, reply["metadata"], peer)
        # A backend failing on purpose names itself, as the HTTP backend's x-backend does.
        detail = reply["detail"]
        backend = detail.split()[0] if detail.endswith(" failed on purpose") else "-"
        return Outcome(HTTP_FOR_GRPC.get(reply["code"], 500), backend, detail)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param
    tulle.client.shutdown()


@pytest.fixture
def caller_for(mode: str, control_plane: ControlPlane, processes: Processes):  # noqa: F811
    """Makes the caller of this test's mode, synced with the control plane's current config;
    closes it after the test."""
    made: list[Caller] = []

    def make() -> Caller:
        caller: Caller
        if mode == "proxyless":  # grpcio connects on its first call, to the current snapshot
            wait_until(lambda: not control_plane.proxy_status()["pending"], timeout=15)
            caller = ProxylessCaller(control_plane)
            made.append(caller)
            return caller
        if mode == "sidecar":
            caller = SidecarCaller(control_plane, processes)
        else:
            caller = LibraryCaller(control_plane)
        made.append(caller)
        wait_until(lambda: synced(control_plane, caller.node), timeout=15)
        return caller

    yield make
    for caller in made:
        caller.close()


@dataclass
class Backends:
    """The backends a scenario started, by name: HTTP servers, or gRPC servers for proxyless
    gRPC (``tests/scenarios/grpc_backend.py``). Each answers with its name and what it got."""

    grpc: bool
    ports: dict[str, int] = field(default_factory=dict)

    def count(self, name: str) -> int:
        """Requests backend ``name`` has answered (asked directly, not through the mesh)."""
        port = self.ports[name]
        if not self.grpc:
            return int(httpx.get(f"http://127.0.0.1:{port}/_count", timeout=10).text)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            return int(channel.unary_unary("/scenario.Backend/Count")(b"", timeout=10))


@pytest.fixture
def serve(mode: str, control_plane: ControlPlane, processes: Processes):  # noqa: F811
    """Starts backends (name → options: version, fail_rate, delay, locality) and registers them
    as endpoints of ``web:8080`` (or of ``service``); returns them (Backends)."""
    backends = Backends(grpc=mode == "proxyless")

    def start(service: str = "web", **wanted: dict[str, Any]) -> Backends:
        for name, given in wanted.items():
            options = dict(given)
            version = options.pop("version", name)
            where = {"locality": options.pop("locality")} if "locality" in options else {}
            if backends.grpc:
                options.pop("gather", None)  # the gRPC backend answers as calls come
                port = processes.start_backend(HERE / "grpc_backend.py", name, **options)
            else:
                port = processes.http_backend(name, **options)
            backends.ports[name] = port
            control_plane.register(
                service=service, address="127.0.0.1", port=port, servicePort=8080,
                labels={"version": version}, protocol="GRPC" if backends.grpc else "HTTP",
                **where,
            )  # fmt: skip
        return backends

    return start


Serve = Callable[..., Backends]


def get_concurrently(caller: Caller, url: str, count: int) -> list[Outcome]:
    """``count`` requests at once, each from a thread of its own; their outcomes."""
    results: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: results.append(caller.get(url))) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def get_all(caller: Caller, url: str, count: int) -> list[Outcome]:
    return [caller.get(url) for _ in range(count)]
