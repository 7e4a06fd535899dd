"""AuthorizationPolicy on an opaque TCP port under ``tulle up --pods`` (issue 17): each app's TCP
is intercepted (iptables) into its sidecar, which opens mTLS to the callee's sidecar; there the
inbound listener finds the port the connection was made to (SO_ORIGINAL_DST) and judges it by
that port's network RBAC, on the caller's certificate. ``web``'s TCP port admits only
``client``'s identity: ``client`` gets the app's answer, ``intruder`` (another mesh identity,
with a valid certificate) is closed without one and counted.

The same mesh proves the TCP side of identity telemetry (issue 17): both sidecars' ``tulle_tcp_*``
metrics carry the principals their handshakes proved and ``connection_security_policy``, and
every TCP connection has an access-log entry, including those that never reached the app:
refused by the policy, refused as plain text by STRICT, and one whose pipe to the app could not
open (``web`` declares a TCP port its app does not listen on). Needs root (network namespaces
and iptables)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import wait_until
from tests.local.conftest import Mesh, running_mesh, tulle, workload

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root"),
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("host-network"),  # never beside another (tests/conftest.py)
]

PEER = "tests/local/mesh_peer.py"
CONFIG = (
    workload("client", f"[python3, {PEER}, client, --port, $(PORT)]")
    + workload("intruder", f"[python3, {PEER}, client, --port, $(PORT)]")
    + workload(
        "web",
        f"[python3, {PEER}, web, --port, $(PORT_HTTP), --tcp-port, $(PORT_SQL)]",
        "[{name: http, port: 8080, protocol: HTTP}, {name: sql, port: 5432, protocol: TCP},"
        " {name: spare, port: 5433, protocol: TCP}]",  # nothing listens on 5433
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

    def metrics(self, replica: str) -> str:
        info = self.replicas[replica]
        url = f"http://{info['ip']}:{info['stats_port']}/stats/prometheus"
        return httpx.get(url, timeout=30).text

    def denied(self) -> float:
        """How many TCP connections web's sidecar closed for the policy."""
        for line in self.metrics("web-0").splitlines():
            if line.startswith(DENIED):
                return float(line.split()[-1])
        return 0.0

    def tcp(self, replica: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """A sidecar's ``tulle_tcp_*`` samples of ``name``, by label set."""
        return {
            frozenset(sample.labels.items()): sample.value
            for family in text_string_to_metric_families(self.metrics(replica))
            for sample in family.samples
            if sample.name == name
        }

    def entries(self, replica: str) -> list[dict[str, Any]]:
        """A sidecar's access-log entries for TCP connections."""
        workload = replica.rsplit("-", 1)[0]
        out = tulle("logs", f"{workload}/{replica}", "-c", "proxy", "--state-dir",
                    str(self.mesh.state_dir)).stdout  # fmt: skip
        found = []
        for line in out.splitlines():
            start = line.find('{"start_time"')
            if start >= 0 and '"protocol":"tcp"' in line:
                found.append(json.loads(line[start:]))
        return found


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


CLIENT = "spiffe://cluster.local/ns/default/sa/client"
INTRUDER = "spiffe://cluster.local/ns/default/sa/intruder"
WEB = "spiffe://cluster.local/ns/default/sa/web"
SERVICE = "web.default.svc.cluster.local"
# The one label set of each side's TCP series: web's sidecar only ever piped client's
# connections (intruder's and the plain-text one never reached a pipe).
CALLER_SIDE = frozenset({
    ("reporter", "source"), ("source_workload", "client"), ("source_principal", CLIENT),
    ("destination_service", SERVICE), ("destination_workload", "web"),
    ("destination_principal", WEB), ("connection_security_policy", "unknown"),
})  # fmt: skip
CALLEE_SIDE = frozenset({
    ("reporter", "destination"), ("source_workload", "client"), ("source_principal", CLIENT),
    ("destination_service", SERVICE), ("destination_workload", "web"),
    ("destination_principal", WEB), ("connection_security_policy", "mutual_tls"),
})  # fmt: skip


def one_entry(
    lab: Lab, replica: str, seen: list[dict[str, Any]] | None = None, **wanted: Any
) -> dict[str, Any]:
    """The one access-log entry of ``replica``'s sidecar with the ``wanted`` fields, not among
    those ``seen`` before (waits for it: entries are written a few times a second)."""
    old = seen or []

    def matching() -> list[dict[str, Any]]:
        return [e for e in lab.entries(replica) if wanted.items() <= e.items() and e not in old]

    wait_until(lambda: matching() != [], timeout=30)
    found = matching()
    assert len(found) == 1, found
    return found[0]


def test_tcp_metrics_and_access_log_carry_the_principals_of_both_sides(lab: Lab) -> None:
    message = "select 'identity telemetry'"  # its length finds this call's entries
    sent = lab.tcp("client-0", "tulle_tcp_sent_bytes_total").get(CALLER_SIDE, 0.0)
    received = lab.tcp("web-0", "tulle_tcp_received_bytes_total").get(CALLEE_SIDE, 0.0)
    answer = lab.ask("client", "tcp", address="web:5432", message=message)
    assert answer == {"ok": True, "answer": f"got:{message}"}
    size, answered = len(message), len(f"got:{message}")

    # Both sides' labels, each from its own handshake: the caller's sidecar names the
    # identity web's sidecar proved; web's names the caller's certificate and mutual_tls.
    wait_until(lambda: lab.tcp("client-0", "tulle_tcp_sent_bytes_total").get(CALLER_SIDE, 0)
               >= sent + size, timeout=30)  # fmt: skip
    wait_until(lambda: lab.tcp("web-0", "tulle_tcp_received_bytes_total").get(CALLEE_SIDE, 0)
               >= received + answered, timeout=30)  # fmt: skip
    for replica, labels in (("client-0", CALLER_SIDE), ("web-0", CALLEE_SIDE)):
        for name in ("tulle_tcp_connections_opened_total", "tulle_tcp_connections_closed_total",
                     "tulle_tcp_sent_bytes_total", "tulle_tcp_received_bytes_total"):  # fmt: skip
            assert set(lab.tcp(replica, name)) == {labels}, (replica, name)
    assert lab.tcp("client-0", "tulle_tcp_sent_bytes_total")[CALLER_SIDE] == sent + size
    assert lab.tcp("web-0", "tulle_tcp_received_bytes_total")[CALLEE_SIDE] == (received + answered)

    web, client = lab.replicas["web-0"], lab.replicas["client-0"]
    outbound = one_entry(lab, "client-0", bytes_received=size, listener="outbound")
    assert outbound["peer_principal"] == WEB
    assert (outbound["flags"], outbound["reason"], outbound["status"]) == ("-", None, 0)
    assert outbound["upstream"] == f"{web['ip']}:5432"
    assert outbound["cluster"] == f"outbound|5432||{SERVICE}"
    assert (outbound["service"], outbound["bytes_sent"]) == (SERVICE, answered)
    assert (outbound["method"], outbound["path"], outbound["request_id"]) == (None, None, None)
    inbound = one_entry(lab, "web-0", bytes_received=size, listener="inbound")
    assert inbound["peer_principal"] == CLIENT
    assert (inbound["flags"], inbound["reason"], inbound["bytes_sent"]) == ("-", None, answered)
    assert (inbound["upstream"], inbound["cluster"]) == ("127.0.0.1:5432", "inbound|5432||")
    assert (inbound["service"], inbound["source"]) == (SERVICE, client["ip"])


def test_refused_and_failed_tcp_connections_have_access_log_entries(lab: Lab) -> None:
    web = lab.replicas["web-0"]
    seen = lab.entries("web-0") + lab.entries("client-0")  # the other tests' connections
    # Refused by the AuthorizationPolicy: the entry names the caller's certificate and why.
    lab.ask("intruder", "tcp", address="web:5432", message="intruder's bytes")
    denied = one_entry(lab, "web-0", seen, flags="RBAC", peer_principal=INTRUDER)
    assert denied["reason"] == "denied: no ALLOW policy matches (default/sql-from-client)"
    assert (denied["service"], denied["cluster"]) == (SERVICE, "inbound|5432||")
    assert (denied["upstream"], denied["bytes_received"], denied["bytes_sent"]) == (None, 0, 0)
    assert denied["source"] == lab.replicas["intruder-0"]["ip"]

    # Plain text from outside the mesh (this process) to the pod's TCP port: STRICT refuses it.
    with socket.create_connection((web["ip"], 5432), timeout=30) as plain:
        plain.sendall(b"select 'in plain text'")
        try:
            got = plain.recv(100)
        except ConnectionResetError:
            got = b""
        assert got == b""  # closed, nothing answered
    refused = one_entry(lab, "web-0", seen, flags="NR")
    assert refused["reason"] == "plain text refused: STRICT mTLS"
    assert (refused["peer_principal"], refused["upstream"], refused["listener"]) == (
        None, None, "inbound"
    )  # fmt: skip

    # The pipe to the app cannot open (nothing listens on 5433): UF, with the reason.
    answer = lab.ask("client", "tcp", address="web:5433", message="to nobody")
    assert answer.get("answer", "") == "", answer
    failed = one_entry(lab, "web-0", seen, flags="UF")
    assert failed["reason"].startswith("upstream connect "), failed
    assert failed["reason"].endswith(f" 127.0.0.1:5433 (cluster {SERVICE})"), failed
    assert "refused" in failed["reason"], failed
    assert (failed["peer_principal"], failed["upstream"]) == (CLIENT, "127.0.0.1:5433")
    assert failed["cluster"] == "inbound|5433||"
    # The caller's side had its mTLS pipe to web's sidecar, which closed it.
    caller = one_entry(lab, "client-0", seen, upstream=f"{web['ip']}:5433")
    assert (caller["peer_principal"], caller["flags"]) == (WEB, "-")
