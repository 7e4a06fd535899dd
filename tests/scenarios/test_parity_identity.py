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

from collections.abc import Iterator
from pathlib import Path

import pytest

import tulle.client
from tests.e2e.conftest import (
    ControlPlane,
    synced,
    wait_until,
)
from tests.scenarios.certified_mesh import (
    CALLEES,
    Mesh,
    certified_mesh,
    has_certificate,
    sidecar_callee,
)
from tests.scenarios.conftest import (
    HERE,
    Outcome,
    ProxylessCaller,
    SidecarCaller,
    http_outcome,
)

pytestmark = pytest.mark.timeout(300)

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
OTHER = "spiffe://cluster.local/ns/default/sa/other"
CONFIG = (
    CALLEES
    + """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: grpc-side}}
spec:
  command: [grpc-side]
  ports: [{{name: grpc, port: 8080, protocol: GRPC}}]
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
)
DENIED = "denied: no ALLOW policy matches (default/frontend-only)"


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


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with certified_mesh(tmp_path_factory.mktemp("identity"), CONFIG) as mesh:
        grpc_app = mesh.procs.start_backend(HERE / "grpc_backend.py", "grpc-side")
        sidecar_callee(mesh, "grpc-side", grpc_app, "GRPC")
        # The callers, for the module: a sidecar and a grpcio app beside its agent for each
        # identity (the library's, one runtime per process, is made by each test).
        for account in ("frontend", "other"):
            pod = f"{account}-0"
            sidecar = SidecarCaller(mesh.plane, mesh.procs, pod, *mesh.identity(account, pod))
            mesh.callers[("sidecar", account)] = sidecar
            wait_until(lambda s=sidecar: has_certificate(s.sidecar), timeout=30)
            _, env = mesh.agent(account, f"{account}-2")
            mesh.callers[("proxyless", account)] = ProxylessCaller(mesh.plane, env)
        # The xds=True server serves once its Listener (mTLS and RBAC with it) has come.
        frontend = mesh.caller("proxyless", "frontend")
        wait_until(lambda: frontend.get(f"{mesh.urls['grpc-xds']}/x", timeout=5).status == 200,
                   timeout=60)  # fmt: skip
        yield mesh


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
