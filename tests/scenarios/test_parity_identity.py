"""Authorization by identity as parity scenarios (issue 17, "Done when", third bullet): one control
plane with its CA, callees of each mode under a STRICT PeerAuthentication and an
AuthorizationPolicy that admits only ``cluster.local/ns/default/sa/frontend``, and callers of
each mode, each with a real workload certificate from the CA, once as ``frontend`` and once as
``other``. The expected outcome is written once: frontend is admitted (and the callee was told
frontend's identity), other is refused 403 / ``PERMISSION_DENIED`` with the policy's reason;
where grpcio words it its own way, the scenario asserts grpcio's words (docs/library.md, the
identity rows of the parity table).

Callers: a sidecar (``tulle proxy`` with its bootstrap token, httpx using it as its HTTP proxy),
the library (``tulle.client`` in this process on the secure xDS port with a token) and
proxyless gRPC (``grpc_caller.py --xds-credentials`` beside its ``tulle agent``). Callees: an
HTTP app behind a sidecar (``side``), a library app under ``tulle.client.uvicorn``
(``library_backend.py``: ``lib``), a gRPC app behind a sidecar (``grpc-side``) and an
``xds=True`` grpcio server under its agent (``grpc_backend.py --xds-port``: ``grpc-xds``). The
HTTP callers call the HTTP callees (the suite's HTTP callers make no gRPC calls); the gRPC
caller calls the gRPC callees, and the library app, which serves no gRPC: that gap is asserted
as grpcio words it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import tulle.client
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
from tests.scenarios.conftest import (
    HERE,
    Caller,
    Outcome,
    ProxylessCaller,
    SidecarCaller,
    http_outcome,
)
from tulle.security.tokens import BootstrapTokens

pytestmark = pytest.mark.timeout(300)

TULLE = str(BIN / "tulle")
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
OTHER = "spiffe://cluster.local/ns/default/sa/other"
TLS_MODE = "security.istio.io/tlsMode"
CONFIG = """\
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
metadata: {{name: grpc-side}}
spec:
  command: [grpc-side]
  ports: [{{name: grpc, port: 8080, protocol: GRPC}}]
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: grpc-xds}}
spec:
  command: [grpc-xds]
  ports: [{{name: grpc, port: {port}, protocol: GRPC}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: strict, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: frontend-only, namespace: default}}
spec:
  action: ALLOW
  rules:
    - from: [{{source: {{principals: ["cluster.local/ns/default/sa/frontend"]}}}}]
"""
DENIED = "denied: no ALLOW policy matches (default/frontend-only)"
CERTIFICATE = "tulle_workload_certificate_expiration_timestamp_seconds{"


class LibraryCaller:
    """``tulle.client.Client`` in this process with a workload certificate: the secure xDS port,
    the trust bundle and a bootstrap token of ``account``. A callee's refusal comes back as its
    response, with the callee's ``x-tulle-error``."""

    def __init__(self, plane: ControlPlane, account: str, token: Path) -> None:
        self.node = f"library~127.0.0.1~{account}-1.default~default.svc.cluster.local"
        runtime = tulle.client.configure(
            xds_address=f"127.0.0.1:{plane.secure_xds_port}", node_id=self.node,
            xds_root_cert=str(plane.state_dir / "root-cert.pem"), token_file=str(token),
            access_log=False,
        )  # fmt: skip
        tulle.client.wait_ready(30)

        def certified() -> bool:  # ready means config: the certificate comes by a call of its own
            keeper = runtime.certificates
            return keeper is not None and keeper.current is not None

        wait_until(certified, timeout=30)
        self.client = tulle.client.Client(timeout=30)

    def get(self, url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Outcome:
        try:
            response = self.client.get(url, headers=headers, timeout=timeout)
        except tulle.client.MeshError as error:
            return Outcome(error.status, "-", error.reason)
        return http_outcome(response, response.headers.get("x-tulle-error", ""))

    def close(self) -> None:
        self.client.close()
        tulle.client.shutdown()


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


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("identity")
    xds_port = free_port()
    (base / "config").mkdir()
    (base / "config" / "mesh.yaml").write_text(CONFIG.format(port=xds_port))
    plane = start_control_plane(base / "state", base / "config")
    mesh = Mesh(plane, base, Processes())
    try:
        sidecar_callee(mesh, "side", mesh.procs.http_backend("side"), "HTTP")
        grpc_app = mesh.procs.start_backend(HERE / "grpc_backend.py", "grpc-side")
        sidecar_callee(mesh, "grpc-side", grpc_app, "GRPC")
        library_callee(mesh, "lib")
        xds_callee(mesh, "grpc-xds", xds_port)
        # The callers, for the module: a sidecar and a grpcio app beside its agent for each
        # identity (the library's, one runtime per process, is made by each test).
        for account in ("frontend", "other"):
            pod = f"{account}-0"
            sidecar = SidecarCaller(plane, mesh.procs, pod, *mesh.identity(account, pod))
            mesh.callers[("sidecar", account)] = sidecar
            wait_until(lambda s=sidecar: has_certificate(s.sidecar), timeout=30)
            _, env = mesh.agent(account, f"{account}-2")
            mesh.callers[("proxyless", account)] = ProxylessCaller(plane, env)
        # The xds=True server serves once its Listener (mTLS and RBAC with it) has come.
        frontend = mesh.caller("proxyless", "frontend")
        wait_until(lambda: frontend.get(f"{mesh.urls['grpc-xds']}/x", timeout=5).status == 200,
                   timeout=60)  # fmt: skip
        yield mesh
    finally:
        for caller in mesh.callers.values():
            caller.close()
        mesh.procs.stop_all()
        _stop(plane.proc)


CASES = [
    ("sidecar", "side"),
    ("sidecar", "lib"),
    ("library", "side"),
    ("library", "lib"),
    ("proxyless", "grpc-side"),
    ("proxyless", "grpc-xds"),
    ("proxyless", "lib"),
]


@pytest.mark.parametrize(("mode", "callee"), CASES)
def test_principals_admit_frontend_and_refuse_another(mesh: Mesh, mode: str, callee: str) -> None:
    url = f"{mesh.urls[callee]}/scenario.Backend/Pay"  # a gRPC method's shape, for every mode
    if (mode, callee) == ("proxyless", "lib"):
        # gap: a library app terminates mTLS for HTTP/1.1 only: its handshake selects no ALPN
        # protocol, and grpcio, which requires h2, fails every connection, whoever calls.
        for account in ("frontend", "other"):
            node = mesh.caller(mode, account).node
            reason = (
                "connections to all backends failing; last error: UNKNOWN: "
                f"ipv4:127.0.0.1:{mesh.ports[callee]}: Cannot check peer: missing selected "
                f"ALPN property. (xDS node ID:{node})"
            )
            assert call(mesh, mode, account, url) == Outcome(503, "-", reason)
        return
    admitted = call(mesh, mode, "frontend", url)
    assert admitted == Outcome(200, callee)
    assert admitted.path == "/scenario.Backend/Pay"
    # The callee was told who called, as the handshake proved it: X-Forwarded-Client-Cert from
    # a sidecar or the library's server, grpcio's auth context at an xds=True server.
    assert admitted.peer == FRONTEND
    denied = call(mesh, mode, "other", url)
    # gap: grpcio's RBAC filter words its refusal its own way (and names no policy)
    reason = "Unauthorized RPC rejected" if callee == "grpc-xds" else DENIED
    assert denied == Outcome(403, "-", reason)


def call(mesh: Mesh, mode: str, account: str, url: str) -> Outcome:
    """One call from ``mode``'s caller with ``account``'s certificate."""
    if mode != "library":
        return mesh.caller(mode, account).get(url)
    caller = LibraryCaller(mesh.plane, account, mesh.token(account, f"{account}-1"))
    try:
        wait_until(lambda: synced(mesh.plane, caller.node), timeout=30)
        return caller.get(url)
    finally:
        caller.close()
