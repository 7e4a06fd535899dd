"""AuthorizationPolicy's address and header conditions as parity scenarios (issue 19): one
control plane, an HTTP app behind a sidecar (``side``) and a library app under
``tulle.client.uvicorn`` (``lib``), both with workload certificates under the mesh's default
PERMISSIVE mode, and one DENY policy whose rules are the conditions under test; real clients
(curl, httpx) call each callee's port directly in plain text, from 127.0.0.1 or, bound with
``--interface``, from 127.0.0.2. The expected outcome is written once for both modes.

- ``ipBlocks`` match the connection's peer (127.0.0.2 is refused, 127.0.0.1 is not, whatever
  X-Forwarded-For says);
- ``remoteIpBlocks`` the original client: with the Mesh's ``numTrustedProxies: 1``, the last
  X-Forwarded-For address (203.0.113.5 refused; an address a trusted proxy did not add is not
  believed);
- ``request.headers[x-block]: ['*']`` presence (an empty value counts);
- ``destination.ip`` the address the connection came to (127.0.0.1, for /local only);
- ``connection.sni`` the server name of the caller's TLS handshake: a sidecar caller with a
  workload certificate calls each callee over mTLS (SNI ``outbound_.8080_._.<host>``).

An ``xds=True`` grpcio server reads the same RBAC with gRFC A36's and A41's gaps, asserted by the
last test (docs/library.md's parity table): ``remote_ip`` is its peer, ``requested_server_name``
is always empty."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import (
    synced,
    wait_until,
)
from tests.scenarios.certified_mesh import (
    CALLEES,
    certified_mesh,
    has_certificate,
    mesh_endpoints,
)
from tests.scenarios.conftest import Outcome, ProxylessCaller, SidecarCaller

pytestmark = pytest.mark.timeout(300)

CONFIG = (
    CALLEES
    + """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh}}
spec: {{numTrustedProxies: 1}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: default}}
spec:
  action: DENY
  rules:
    - from: [{{source: {{ipBlocks: [127.0.0.2]}}}}]
    - from: [{{source: {{remoteIpBlocks: [203.0.113.0/24]}}}}]
    - when: [{{key: "request.headers[x-block]", values: ["*"]}}]
    - to: [{{operation: {{paths: [/local]}}}}]
      when: [{{key: destination.ip, values: [127.0.0.1/32]}}]
    - to: [{{operation: {{paths: [/sni]}}}}]
      when: [{{key: connection.sni, values: ["*.default.svc.cluster.local"]}}]
    - to: [{{operation: {{paths: [/scenario.Backend/Peer]}}}}]
      from: [{{source: {{ipBlocks: [127.0.0.1]}}}}]
    - to: [{{operation: {{paths: [/scenario.Backend/Sni]}}}}]
      when: [{{key: connection.sni, values: ["*"]}}]
    - to: [{{operation: {{paths: [/scenario.Backend/NoSni]}}}}]
      when: [{{key: connection.sni, notValues: ["*"]}}]
"""
)
DENIED = "denied by policy default/deny"


@dataclass
class Callees:
    """Each HTTP callee's port, as a client outside the mesh reaches it; the grpcio caller
    (with frontend's certificate) and the ``xds=True`` server's URL."""

    ports: dict[str, int]
    grpc: ProxylessCaller
    grpc_url: str
    sidecar: SidecarCaller  # a sidecar with frontend's certificate: calls over mTLS, with SNI


@pytest.fixture(scope="module")
def callees(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callees]:
    with certified_mesh(tmp_path_factory.mktemp("conditions"), CONFIG) as mesh:
        _, env = mesh.agent("frontend", "frontend-2")
        caller = mesh.callers[("proxyless", "frontend")] = ProxylessCaller(mesh.plane, env)
        sidecar = SidecarCaller(
            mesh.plane, mesh.procs, "frontend-0", *mesh.identity("frontend", "frontend-0")
        )
        mesh.callers[("sidecar", "frontend")] = sidecar
        wait_until(lambda: has_certificate(sidecar.sidecar), timeout=30)
        side = next(
            int(key.rsplit(":", 1)[1])
            for key in mesh_endpoints(mesh.plane)
            if key.startswith("side.default.svc.cluster.local|")
        )
        url = f"{mesh.urls['grpc-xds']}/scenario.Backend/"
        # The xds=True server serves once its Listener (mTLS and RBAC with it) has come.
        wait_until(lambda: caller.get(url + "Ready", timeout=5).status == 200, timeout=60)
        wait_until(lambda: synced(mesh.plane, sidecar.node), timeout=30)
        yield Callees({"side": side, "lib": mesh.ports["lib"]}, caller, url, sidecar)


def curl(port: int, path: str = "/", source: str = "127.0.0.1", *headers: str) -> tuple[int, str]:
    """curl's status and the mesh's x-tulle-error ("" without) for one plain-text call."""
    extra = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", "20", "--interface", source,
         *extra, f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    status = int(lines[0].split()[1])
    reason = next(
        (
            line.split(":", 1)[1].strip()
            for line in lines
            if line.lower().startswith("x-tulle-error:")
        ),
        "",
    )
    return status, reason


def fetch(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """httpx's view of the same (from 127.0.0.1)."""
    response = httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=20)
    return response.status_code, response.headers.get("x-tulle-error", "")


ALLOWED = (200, "")
REFUSED = (403, DENIED)


@pytest.mark.parametrize("callee", ["side", "lib"])
def test_address_and_header_conditions(callees: Callees, callee: str) -> None:
    port = callees.ports[callee]
    # ipBlocks: the connection's peer
    assert curl(port) == ALLOWED
    assert curl(port, "/", "127.0.0.2") == REFUSED
    assert curl(port, "/", "127.0.0.1", "X-Forwarded-For: 127.0.0.2") == ALLOWED
    # remoteIpBlocks: the address the one trusted proxy added (the last), not one before it
    assert fetch(port, headers={"X-Forwarded-For": "203.0.113.5"}) == REFUSED
    assert fetch(port, headers={"X-Forwarded-For": "203.0.113.5, 198.51.100.1"}) == ALLOWED
    assert curl(port, "/", "127.0.0.2", "X-Forwarded-For: 198.51.100.1") == REFUSED
    # request.headers[x-block]: ['*'] is presence, an empty value too
    assert fetch(port, headers={"x-block": ""}) == REFUSED
    assert fetch(port, headers={"x-other": "1"}) == ALLOWED
    # destination.ip: the address the connection came to
    assert fetch(port, "/local") == REFUSED
    assert fetch(port, "/elsewhere") == ALLOWED
    # connection.sni: a mesh caller's mTLS handshake names outbound_.8080_._.<host>; plain
    # text has none
    assert fetch(port, "/sni") == ALLOWED
    through = callees.sidecar.get(f"http://{callee}:8080/sni")
    assert (through.status, through.reason) == REFUSED
    assert callees.sidecar.get(f"http://{callee}:8080/other").status == 200


GRPC_REFUSED = Outcome(403, "-", "Unauthorized RPC rejected")


def test_grpcio_reads_the_conditions_with_its_gaps(callees: Callees) -> None:
    """An ``xds=True`` grpcio server (under its ``tulle agent``) called by a stock grpcio client
    with frontend's certificate: as at a sidecar, metadata presence and ``ipBlocks`` (its peer);
    the gaps: ``remoteIpBlocks`` is the peer whatever X-Forwarded-For says (grpcio takes no
    trusted hops, gRFC A36), ``connection.sni`` is always empty (gRFC A41). A refusal is
    grpcio's own ``PERMISSION_DENIED`` "Unauthorized RPC rejected"."""
    caller, url = callees.grpc, callees.grpc_url
    assert caller.get(url + "Pay") == Outcome(200, "grpc-xds")
    assert caller.get(url + "Pay", {"x-block": "1"}) == GRPC_REFUSED
    assert caller.get(url + "Peer") == GRPC_REFUSED
    # gap: the peer (127.0.0.1), not the trusted proxy's X-Forwarded-For address
    assert caller.get(url + "Pay", {"x-forwarded-for": "203.0.113.5"}) == Outcome(200, "grpc-xds")
    # gap: no SNI: values ['*'] never match, notValues ['*'] always do
    assert caller.get(url + "Sni") == Outcome(200, "grpc-xds")
    assert caller.get(url + "NoSni") == GRPC_REFUSED
