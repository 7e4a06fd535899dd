"""Proxyless gRPC under ``tulle up`` (``mesh: proxyless``), every part real: the runner issues
each replica's token, runs its ``tulle agent``, writes its secure gRPC bootstrap and starts the
app (stock grpcio, its own xDS client) once the first certificate is there. A proxyless client
reaches an ``xds=True`` server over mTLS (the server sees the client's SPIFFE id and
certificate), the server's AuthorizationPolicy admits the client's principal and refuses
another workload's; ``tulle ca stage`` reaches the agents by the ``ROOTCA`` push (their
certificates live a day, so no half-life renewal can be what moved them): each rewrites
``root-cert.pem`` with both roots and renews, and calls keep working. A killed agent takes its
app with it and the replica comes back. The same mesh as pods (``--pods``, root): the client
reaches the server at its pod address over mTLS. After ``tulle down`` nothing is left: no
process, no key (and with pods no namespace)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.local.conftest import TULLE, Mesh, running_mesh, tulle, workload

pytestmark = pytest.mark.timeout(240)

CALLER = "[python3, tests/local/proxyless_caller.py]"
CONFIG = (
    workload("greeter", "[python3, tests/e2e/grpc_mtls_peer.py, xds-server, $(PORT), --host, $(HOST)]",
             ports="[{name: grpc, port: 50051, protocol: GRPC}]", mesh="proxyless")
    .replace("  readiness: {httpGet: {path: /ready}}\n", "")
    + workload("client", CALLER, mesh="proxyless")
    + workload("intruder", CALLER, mesh="proxyless")
    + """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: greeter-callers}
spec:
  selector: {matchLabels: {app: greeter}}
  action: ALLOW
  rules:
    - from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]
"""
)  # fmt: skip
TARGET = "xds:///greeter.default.svc.cluster.local:50051"
CLIENT = "spiffe://cluster.local/ns/default/sa/client"
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("proxyless")
    with running_mesh(root, CONFIG) as mesh:
        yield mesh
    run = root / "state" / "run"
    assert sorted(p.name for p in run.iterdir()) == []  # no key, certificate or bootstrap left


def call(mesh: Mesh, replica: str) -> dict[str, Any]:
    """One call from ``replica``'s app to the greeter (a new channel, a new handshake)."""
    response = httpx.get(
        f"http://{mesh.replica(replica)['address']}/call", params={"target": TARGET}, timeout=60
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def listeners_beside_a_second_stream(mesh: Mesh, node: str, certs: Path) -> str:
    """``node``'s Listeners as proxy-config shows them while a second ``tulle agent`` of the
    replica (as after an agent restart) has its trust-bundle stream open, opened after
    grpcio's."""
    control_plane = mesh.state_dir / "controlplane"
    token = control_plane / "bootstrap-tokens" / "greeter-0.default.token"
    agent = subprocess.Popen(
        [*TULLE, "agent", "--certs", str(certs), "--pod", "greeter-0",
         "--xds", mesh.status()["secure_xds"], "--token-file", str(token),
         "--xds-root-cert", str(control_plane / "root-cert.pem")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = mesh.status()["api"]
    try:

        def streams() -> int:
            status = httpx.get(f"{api}/api/v1/proxy-status", headers=mesh.auth, timeout=10)
            return sum(n["node"] == node for n in status.json()["nodes"])

        wait_until(lambda: streams() == 3, what="the second agent's stream")
        response = httpx.get(f"{api}/api/v1/proxy-config", headers=mesh.auth, timeout=10,
                             params={"node": node, "type": "listeners"})  # fmt: skip
        assert response.status_code == 200, response.text
        return response.text
    finally:
        agent.terminate()
        assert agent.wait(timeout=30) == 0


def wait_until(condition: Any, timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_proxyless_client_reaches_a_proxyless_server_over_mtls_and_policy_holds(
    mesh: Mesh, tmp_path: Path
) -> None:
    greeter = mesh.replica("greeter-0")
    assert greeter["mode"] == "proxyless"
    assert greeter["ready"] is True
    # The agent runs beside the app; its files are where the bootstrap says, the key 0600.
    certs = Path(greeter["certs"])
    assert greeter["agent_pid"]
    assert greeter["app_pid"]
    assert sorted(os.listdir(certs)) == ["cert-chain.pem", "key.pem", "root-cert.pem", "xds-token"]
    assert (certs / "key.pem").stat().st_mode & 0o777 == 0o600
    assert certs.stat().st_mode & 0o777 == 0o700
    environ = Path(f"/proc/{greeter['app_pid']}/environ").read_bytes().split(b"\0")
    bootstrap_path = next(e for e in environ if e.startswith(b"GRPC_XDS_BOOTSTRAP="))
    assert b"GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true" in environ
    bootstrap = json.loads(Path(bootstrap_path.split(b"=", 1)[1].decode()).read_text())
    provider = bootstrap["certificate_providers"]["default"]["config"]
    assert provider["certificate_file"] == str(certs / "cert-chain.pem")
    assert bootstrap["xds_servers"][0]["channel_creds"][0]["type"] == "tls"
    assert (
        bootstrap["node"]["id"] == "proxyless~127.0.0.1~greeter-0.default~default.svc.cluster.local"
    )

    # mTLS end to end: the server saw the client's identity and certificate.
    answer = call(mesh, "client-0")
    assert answer["ok"] is True, answer
    name, caller, _serial = answer["reply"].split("|")
    assert (name, caller) == ("greeter", CLIENT)
    # Another workload's certificate is refused by the server's RBAC (gRFC A41).
    refused = call(mesh, "intruder-0")
    assert refused == {"ok": False, "code": "PERMISSION_DENIED",
                       "detail": "Unauthorized RPC rejected"}, refused  # fmt: skip

    # The server is STRICT at the port it listens on, as tulle proxy-status shows it.
    status = httpx.get(f"{mesh.status()['api']}/api/v1/proxy-status", headers=mesh.auth,
                       timeout=10).json()  # fmt: skip
    port = greeter["address"].rsplit(":", 1)[1]
    modes = [n.get("serverMtls", {}) for n in status["nodes"]
             if n["node"].startswith("proxyless~127.0.0.1~greeter-0.default~")]  # fmt: skip
    assert {"STRICT"} == {m.get(f"127.0.0.1:{port}") for m in modes if m}
    # The registry has it as in the mesh (clients speak mTLS to it), healthy once ready.
    endpoints = httpx.get(f"{mesh.status()['api']}/api/v1/endpoints", headers=mesh.auth,
                          timeout=10).json()["items"]  # fmt: skip
    (entry,) = [e for e in endpoints if e["workload"] == "greeter"]
    assert entry["labels"]["security.istio.io/tlsMode"] == "istio"
    assert entry["healthy"] is True
    # The caller's HTTP port is its own (grpcio serves gRPC only): plain text, no label.
    (caller,) = [e for e in endpoints if e["workload"] == "client"]
    assert "security.istio.io/tlsMode" not in caller["labels"]
    assert str(entry["port"]) == port

    # A second stream of the node (another trust-bundle watch, as its agent has) does not hide
    # what grpcio's stream was sent from proxy-config.
    node = "proxyless~127.0.0.1~greeter-0.default~default.svc.cluster.local"
    sent = listeners_beside_a_second_stream(mesh, node, tmp_path / "certs")
    assert f"127.0.0.1:{port}" in sent

    # Both processes show in tulle logs.
    agent_log = tulle("logs", "greeter", "-c", "agent", "--state-dir", str(mesh.state_dir)).stdout
    assert "tulle agent: certificates in " + str(certs) in agent_log
    assert "wrote spiffe://cluster.local/ns/default/sa/greeter serial" in agent_log


def test_the_agents_take_a_staged_root_from_the_push(mesh: Mesh) -> None:
    api = mesh.status()["api"]
    certs = {r: Path(mesh.replica(r)["certs"]) for r in ("greeter-0", "client-0")}
    chains = {r: (c / "cert-chain.pem").read_bytes() for r, c in certs.items()}
    for directory in certs.values():
        assert len(PEM.findall((directory / "root-cert.pem").read_bytes())) == 1
    staged = tulle("ca", "stage", "--server", api, "--token", mesh.token)
    assert staged.returncode == 0

    def moved() -> bool:
        for replica, directory in certs.items():
            bundle = (directory / "root-cert.pem").read_bytes()
            if len(PEM.findall(bundle)) != 2:
                return False
            if (directory / "cert-chain.pem").read_bytes() == chains[replica]:
                return False  # not renewed yet
        return True

    wait_until(moved, what="the agents' root-cert.pem with the staged root, and a new leaf")
    bundle = (certs["greeter-0"] / "root-cert.pem").read_bytes()
    assert bundle == (mesh.state_dir / "controlplane" / "root-cert.pem").read_bytes()
    assert (certs["greeter-0"] / "root-cert.pem").stat().st_mode & 0o777 == 0o644
    agent_log = tulle("logs", "greeter", "-c", "agent", "--state-dir", str(mesh.state_dir)).stdout
    assert "the mesh's trust bundle changed: rewrote root-cert.pem" in agent_log
    # grpcio re-reads the files (every 5 s under tulle up); calls work all along.
    answer = call(mesh, "client-0")
    assert answer["ok"] is True, answer


def test_a_killed_agent_restarts_the_replica_and_calls_come_back(mesh: Mesh) -> None:
    before = mesh.replica("greeter-0")
    os.kill(before["agent_pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = mesh.replica("greeter-0")
        fresh = now["restarts"] == before["restarts"] + 1 and now["ready"]
        return now if fresh and now["agent_pid"] != before["agent_pid"] else None

    after = wait_until(restarted, what="greeter-0 restarted with a new agent")
    assert after["last_exit"] == "agent killed by SIGKILL"
    assert not Path(f"/proc/{before['app_pid']}").exists()  # the app went with its agent
    answer = wait_until(lambda: (a := call(mesh, "client-0"))["ok"] and a, what="a call")
    assert answer["reply"].split("|")[:2] == ["greeter", CLIENT]


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
@pytest.mark.xdist_group("host-network")  # never beside another (tests/conftest.py)
def test_proxyless_pods_call_each_other_over_mtls(tmp_path: Path) -> None:
    with running_mesh(tmp_path, CONFIG, pods=True) as pods:
        greeter = pods.replica("greeter-0")
        assert greeter["address"] == f"{greeter['ip']}:50051"
        answer = call(pods, "client-0")
        assert answer["ok"] is True, answer
        assert answer["reply"].split("|")[:2] == ["greeter", CLIENT]
        refused = call(pods, "intruder-0")
        assert refused["code"] == "PERMISSION_DENIED", refused
