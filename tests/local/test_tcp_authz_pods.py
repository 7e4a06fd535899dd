"""AuthorizationPolicy on an opaque TCP port under ``tulle up --pods`` (issue 17): each app's TCP
is intercepted (iptables) into its sidecar, which opens mTLS to the callee's sidecar; there the
inbound listener finds the port the connection was made to (SO_ORIGINAL_DST) and judges it by
that port's network RBAC, on the caller's certificate. ``web``'s TCP port admits only
``client``'s identity: ``client`` gets the app's answer, ``intruder`` (another mesh identity,
with a valid certificate) is closed without one and counted. Needs root (network namespaces and
iptables)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.local.conftest import Mesh, running_mesh, workload

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root"),
    pytest.mark.timeout(300),
]

PEER = "tests/local/mesh_peer.py"
CONFIG = (
    workload("client", f"[python3, {PEER}, client, --port, $(PORT)]")
    + workload("intruder", f"[python3, {PEER}, client, --port, $(PORT)]")
    + workload(
        "web",
        f"[python3, {PEER}, web, --port, $(PORT_HTTP), --tcp-port, $(PORT_SQL)]",
        "[{name: http, port: 8080, protocol: HTTP}, {name: sql, port: 5432, protocol: TCP}]",
    )
    + """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web-strict}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sql-from-client}
spec:
  selector: {matchLabels: {app: web}}
  rules:
    - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
"""
)
DENIED = (
    'tulle_inbound_tcp_denied_total{destination_service="web.default.svc.cluster.local",'
    'policy="none"}'
)


class Lab:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.replicas = {r["replica"]: r for r in mesh.status()["replicas"]}

    def ask(self, caller: str, what: str, **ask: str) -> dict[str, Any]:
        """``caller``'s app makes a call (its ``POST /<what>``); what it got."""
        address = self.replicas[f"{caller}-0"]["address"]
        reply = httpx.post(f"http://{address}/{what}", json=ask, timeout=60)
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()
        return answer

    def denied(self) -> float:
        """How many TCP connections web's sidecar closed for the policy."""
        info = self.replicas["web-0"]
        metrics = httpx.get(
            f"http://{info['ip']}:{info['stats_port']}/stats/prometheus", timeout=30
        ).text
        for line in metrics.splitlines():
            if line.startswith(DENIED):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_mesh(tmp_path_factory.mktemp("tcp-authz"), CONFIG, pods=True) as mesh:
        yield Lab(mesh)


def test_only_the_allowed_identity_reaches_the_tcp_port(lab: Lab) -> None:
    answer = lab.ask("client", "tcp", address="web:5432", message="select 1")
    assert answer == {"ok": True, "answer": "got:select 1"}
    before = lab.denied()
    refused = lab.ask("intruder", "tcp", address="web:5432", message="drop table")
    # Closed without the app's answer: an EOF, or a reset (the bytes sent were never read).
    reset = refused.get("reason", "").startswith("ConnectionResetError")
    assert refused == {"ok": True, "answer": ""} or reset, refused
    wait_until(lambda: lab.denied() > before, timeout=30)
    # The same identity still gets through afterwards.
    again = lab.ask("client", "tcp", address="web:5432", message="select 2")
    assert again == {"ok": True, "answer": "got:select 2"}
