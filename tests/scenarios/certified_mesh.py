"""A mesh of certified callees for the parity scenarios of identity and conditions: one control
plane with its CA, an HTTP app behind a sidecar (``side``), a library app under
``tulle.client.uvicorn`` (``lib``) and an ``xds=True`` grpcio server under its agent
(``grpc-xds``), each with its own workload certificate (:func:`certified_mesh`); and the
:class:`Mesh` that starts more callees and callers with certificates of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.conftest import (
    BIN,
    ControlPlane,
    Processes,
    Sidecar,
    _stop,
    free_port,
    start_control_plane,
    synced,
    wait_until,
)
from tests.scenarios.conftest import HERE, Caller
from tulle.security.tokens import BootstrapTokens

TULLE = str(BIN / "tulle")
TLS_MODE = "security.istio.io/tlsMode"
CERTIFICATE = "tulle_workload_certificate_expiration_timestamp_seconds{"
# The callees' Workloads, ahead of a scenario's own config: ``{port}`` is grpc-xds's port, and
# the rest is a str.format template too (braces doubled).
CALLEES = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: side}}
spec:
  command: [side]
  ports: [{{name: http, port: 8080}}]
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: lib}}
spec:
  command: [lib]
  ports: [{{name: http, port: 8080}}]
  mesh: library
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: grpc-xds}}
spec:
  command: [grpc-xds]
  ports: [{{name: grpc, port: {port}, protocol: GRPC}}]
---
"""


@dataclass
class Mesh:
    """The module's control plane, its callees (by name: the URL to call them at) and its
    sidecar and proxyless callers (by mode and account; the library's, one runtime per
    process, is made by each test)."""

    plane: ControlPlane
    base: Path
    procs: Processes
    urls: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # each callee's endpoint
    callers: dict[tuple[str, str], Caller] = field(default_factory=dict)

    @property
    def secure_xds(self) -> str:
        return f"127.0.0.1:{self.plane.secure_xds_port}"

    @property
    def root(self) -> str:
        return str(self.plane.state_dir / "root-cert.pem")

    def token(self, account: str, pod: str) -> Path:
        return BootstrapTokens(self.plane.state_dir).issue("default", account, f"{pod}.default")

    def identity(self, account: str, pod: str) -> list[str]:
        """``tulle proxy``'s options for ``account``'s certificate as replica ``pod``."""
        token = self.token(account, pod)
        return ["--xds", self.secure_xds, "--xds-root-cert", self.root, "--token-file", str(token)]

    def agent(
        self, account: str, pod: str, *child: str
    ) -> tuple[subprocess.Popen[str], dict[str, str]]:
        """``tulle agent`` keeping ``account``'s certificate files for a grpcio app (``child``,
        run by the agent, when given); the agent and the environment of a grpcio app of it."""
        certs = self.base / f"{pod}-certs"
        bootstrap = subprocess.run(
            [TULLE, "bootstrap", "grpc", "--xds", self.secure_xds, "--certs", str(certs),
             "--pod", pod],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": bootstrap, "GRPC_VERBOSITY": "NONE"}
        proc = subprocess.Popen(
            [TULLE, "agent", "--certs", str(certs), "--pod", pod, "--xds", self.secure_xds,
             "--xds-root-cert", self.root, "--token-file", str(self.token(account, pod)),
             "--log-level", "warning", *(["--", *child] if child else [])],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.procs.started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"tulle agent: certificates in {certs}\n", line
        return proc, {**env, "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS": "true"}

    def caller(self, mode: str, account: str) -> Caller:
        """The sidecar or proxyless caller of ``account``, synced with the current config."""
        caller = self.callers[(mode, account)]
        if mode == "sidecar":
            wait_until(lambda: synced(self.plane, caller.node), timeout=30)
        else:  # grpcio connects on its first call, to the current snapshot
            wait_until(lambda: not self.plane.proxy_status()["pending"], timeout=30)
        return caller


def has_certificate(sidecar: Sidecar) -> bool:
    """The sidecar holds its workload certificate (its expiry gauge exists only then; /ready
    says only that its config came)."""
    return CERTIFICATE in sidecar.admin("/stats/prometheus").text


def sidecar_callee(mesh: Mesh, name: str, app_port: int, protocol: str) -> None:
    """``name``'s app on ``app_port`` behind a sidecar with ``name``'s certificate, registered
    as ``name:8080``, in the mesh (its endpoint says ``tlsMode: istio``)."""
    inbound = free_port()
    pod = f"{name}-0"
    ports = ["--inbound-port", str(inbound), "--app-port", str(app_port)]
    sidecar = mesh.procs.sidecar(mesh.plane, pod, None, *mesh.identity(name, pod), *ports)
    mesh.plane.register(
        service=name, address="127.0.0.1", port=inbound, servicePort=8080, protocol=protocol,
        serviceAccount=name, labels={TLS_MODE: "istio"},
    )  # fmt: skip
    wait_until(lambda: synced(mesh.plane, sidecar.node) and has_certificate(sidecar), timeout=30)
    mesh.urls[name] = f"http://{name}:8080"


def library_callee(mesh: Mesh, name: str) -> None:
    """``library_backend.py`` as replica ``<name>-0`` with ``name``'s certificate; it registers
    itself as ``name:8080`` (in the mesh once its server terminates mTLS)."""
    port = free_port()
    node = f"library~127.0.0.1~{name}-0.default~default.svc.cluster.local"
    env = {
        **os.environ, "TULLE_XDS_ADDRESS": mesh.secure_xds, "TULLE_XDS_ROOT_CERT": mesh.root,
        "TULLE_TOKEN_FILE": str(mesh.token(name, f"{name}-0")), "TULLE_SERVER": mesh.plane.api,
        "TULLE_NODE_ID": node, "TULLE_SERVICE": name, "TULLE_SERVICE_PORT": "8080",
        "PORT": str(port), "BACKEND_NAME": name,
    }  # fmt: skip
    with open(mesh.base / f"{name}.log", "w") as log:
        command = [sys.executable, str(HERE / "library_backend.py")]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    mesh.procs.started.append(proc)

    def in_the_mesh() -> bool:
        assert proc.poll() is None, (mesh.base / f"{name}.log").read_text()
        endpoints = mesh_endpoints(mesh.plane)
        return endpoints.get(f"{name}.default.svc.cluster.local|127.0.0.1:{port}") == "istio"

    wait_until(in_the_mesh, timeout=60)
    wait_until(lambda: synced(mesh.plane, node), timeout=30)
    mesh.urls[name] = f"http://{name}:8080"
    mesh.ports[name] = port


def mesh_endpoints(plane: ControlPlane) -> dict[str, str]:
    """Each registered endpoint's ``tlsMode`` label ("" without)."""
    items = httpx.get(f"{plane.api}/api/v1/endpoints", headers=plane.auth, timeout=10).json()
    return {i["id"]: i["labels"].get(TLS_MODE, "") for i in items["items"]}


def xds_callee(mesh: Mesh, name: str, port: int) -> None:
    """``grpc_backend.py --xds-port`` (an ``xds=True`` grpcio server) run by its agent, with
    ``name``'s certificate, registered as ``name:<port>`` in the mesh."""
    child = (sys.executable, str(HERE / "grpc_backend.py"), "--name", name, "--xds-port", str(port))
    agent, _ = mesh.agent(name, f"{name}-0", *child)
    assert agent.stdout is not None
    assert agent.stdout.readline() == f"READY {port}\n"  # the child, under the agent
    mesh.plane.register(
        service=name, address="127.0.0.1", port=port, servicePort=port, protocol="GRPC",
        serviceAccount=name, labels={TLS_MODE: "istio"},
    )  # fmt: skip
    mesh.urls[name] = f"http://{name}:{port}"


@contextmanager
def certified_mesh(base: Path, config: str) -> Iterator[Mesh]:
    """A control plane on ``config`` (:data:`CALLEES` and the scenario's resources, formatted
    with grpc-xds's ``port``) with the callees side, lib and grpc-xds started and in the mesh;
    on exit the callers in ``mesh.callers`` are closed and every process stopped."""
    xds_port = free_port()
    (base / "config").mkdir()
    (base / "config" / "mesh.yaml").write_text(config.format(port=xds_port))
    plane = start_control_plane(base / "state", base / "config")
    mesh = Mesh(plane, base, Processes())
    try:
        sidecar_callee(mesh, "side", mesh.procs.http_backend("side"), "HTTP")
        library_callee(mesh, "lib")
        xds_callee(mesh, "grpc-xds", xds_port)
        yield mesh
    finally:
        for caller in mesh.callers.values():
            caller.close()
        mesh.procs.stop_all()
        _stop(plane.proc)
