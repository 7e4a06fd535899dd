"""Proxyless gRPC under zero trust, every part real: a control plane serving only its secure xDS
port, ``tulle agent`` processes keeping each app's certificate files fresh (a 10 s certificate
lifetime), ``tulle bootstrap grpc`` bootstraps, and stock grpcio at both ends — an
``xds=True`` server (``grpc.xds_server_credentials``, run by its agent as a child) and clients
on ``grpc.xds_channel_credentials``. grpcio's xDS client authenticates to the control plane with
the replica's token (gRFC A97 call credentials) over TLS (gRFC A65).

Shown: calls keep succeeding over mTLS across certificate renewals at both ends (each call on a
new connection, so the new certificates are the ones in use, past the first ones' expiry); the
server is STRICT (a plain-text client is refused) and ``tulle proxy-status`` says so; a
namespace DISABLE makes it plain text; an AuthorizationPolicy with ``principals`` admits the
client's identity and refuses another's; a proxyless client calls a STRICT sidecar workload
the same way (the sidecar counts it under the client's principal, and its RBAC refuses another
with a gRPC status); and exactly what fails without the pieces: another
replica's token (no certificate), grpcio without the call-credentials flag or with a token file
that is not a JWT (no config)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509

from tests.e2e.conftest import (
    BIN,
    EXAMPLES,
    HERE,
    ControlPlane,
    Sidecar,
    _stop,
    start_control_plane,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)

TULLE = str(BIN / "tulle")
PEER = str(HERE / "grpc_mtls_peer.py")
CLIENT = "spiffe://cluster.local/ns/default/sa/client"
CALL_CREDS_FLAG = "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS"
CONFIG = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec: {{workloadCertificateLifetime: 10s}}
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: greeter}}
spec:
  command: [python3, grpc_mtls_peer.py]
  ports: [{{name: grpc, port: {port}, protocol: GRPC}}]
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: hello}}
spec:
  command: [python3, greeter_server.py]
  ports: [{{name: grpc, port: 50052, protocol: GRPC}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: hello}}
spec: {{selector: {{matchLabels: {{app: hello}}}}, mtls: {{mode: STRICT}}}}
"""
HELLO = "xds:///hello.default.svc.cluster.local:50052"
ONLY_CLIENT = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: greeter-callers}
spec:
  selector: {matchLabels: {app: greeter}}
  action: ALLOW
  rules:
    - from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]
"""
HELLO_ONLY_CLIENT = ONLY_CLIENT.replace("greeter", "hello")
NAMESPACE_DISABLE = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: plain, namespace: default}
spec: {mtls: {mode: DISABLE}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serial(certs: Path) -> str:
    """The serial (hex) of the certificate the agent last wrote to ``certs``."""
    chain = (certs / "cert-chain.pem").read_bytes()
    return f"{x509.load_pem_x509_certificate(chain).serial_number:x}"


def not_after(certs: Path) -> float:
    chain = (certs / "cert-chain.pem").read_bytes()
    return x509.load_pem_x509_certificate(chain).not_valid_after_utc.timestamp()


@dataclass
class Mesh:
    """The control plane, the greeter server (under its agent) and helpers for clients."""

    plane: ControlPlane
    port: int
    root: Path
    server_certs: Path
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"xds:///greeter.default.svc.cluster.local:{self.port}"

    @property
    def xds(self) -> str:
        return f"127.0.0.1:{self.plane.secure_xds_port}"

    def token(self, account: str, pod: str) -> Path:
        """A bootstrap token for replica ``pod`` as ``account``, by ``tulle bootstrap token``."""
        issued = subprocess.run(
            [TULLE, "bootstrap", "token", "--pod", pod, "--service-account", account,
             "--state-dir", str(self.plane.state_dir)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        path = Path(issued.strip())
        assert path == self.plane.state_dir / "bootstrap-tokens" / f"{pod}.default.token"
        assert path.stat().st_mode & 0o777 == 0o600
        return path

    def bootstrap(self, certs: Path, pod: str) -> str:
        return subprocess.run(
            [TULLE, "bootstrap", "grpc", "--xds", self.xds, "--certs", str(certs), "--pod", pod,
             "--refresh-interval", "1"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip

    def agent_command(self, certs: Path, pod: str, token: Path) -> list[str]:
        return [
            TULLE, "agent", "--certs", str(certs), "--pod", pod, "--xds", self.xds,
            "--xds-root-cert", str(self.root), "--token-file", str(token),
            "--log-level", "warning",
        ]  # fmt: skip

    def agent(
        self, started: list[subprocess.Popen[str]], certs: Path, pod: str, account: str,
        *child: str,
    ) -> dict[str, str]:  # fmt: skip
        """Start an agent (running ``child`` when given; added to ``started``) and wait for its
        first files; the environment a grpcio app of that replica runs with."""
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": self.bootstrap(certs, pod)}
        env["GRPC_VERBOSITY"] = "NONE"
        command = self.agent_command(certs, pod, self.token(account, pod))
        proc = subprocess.Popen(
            [*command, *(["--", *child] if child else [])],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"tulle agent: certificates in {certs}\n", line
        return {**env, CALL_CREDS_FLAG: "true"}

    def call(self, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [sys.executable, PEER, "client", self.target, *args],
            capture_output=True, text=True, env=env, timeout=120, check=True,
        )  # fmt: skip
        return [json.loads(line) for line in proc.stdout.splitlines()]

    def server_modes(self) -> dict[str, str]:
        """The modes grpcio's server stream was sent (the node's agent has a stream of its own,
        for the trust bundle only, with no Listeners)."""
        for node in self.plane.proxy_status()["nodes"]:
            if (
                node["node"].startswith("proxyless~127.0.0.1~greeter-0.default~")
                and node["serverMtls"]
            ):
                assert node["secure"] is True
                return dict(node["serverMtls"])
        return {}

    def delete(self, kind: str, name: str) -> None:
        response = httpx.delete(
            f"{self.plane.api}/api/v1/resources/{kind}/default/{name}",
            headers=self.plane.auth,
            timeout=10,
        )
        assert response.status_code == 200, response.text


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """The processes (client agents) a test starts, stopped when it ends."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in reversed(procs):
        _stop(proc)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("proxyless")
    port = free_port()
    (base / "config").mkdir()
    (base / "config" / "mesh.yaml").write_text(CONFIG.format(port=port))
    plane = start_control_plane(base / "state", base / "config", insecure_xds=False)
    mesh = Mesh(plane, port, base / "state" / "root-cert.pem", base / "greeter-certs")
    try:
        plane.register(
            service="greeter", address="127.0.0.1", port=port, servicePort=port,
            protocol="GRPC", serviceAccount="greeter",
            labels={"security.istio.io/tlsMode": "istio"},
        )  # fmt: skip
        child = (sys.executable, PEER, "xds-server", str(port))
        mesh.agent(mesh.started, mesh.server_certs, "greeter-0", "greeter", *child)
        assert mesh.started[0].stdout is not None
        assert mesh.started[0].stdout.readline() == f"READY {port}\n"  # the child, under the agent
        yield mesh
    finally:
        for proc in reversed(mesh.started):
            _stop(proc)
        _stop(plane.proc)


def test_calls_keep_succeeding_across_renewals(
    mesh: Mesh, started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    server = mesh.started[0]
    client_certs = tmp_path / "client-certs"
    env = mesh.agent(started, client_certs, "client-0", "client")
    greeter_certs = mesh.server_certs
    first_server, first_server_expiry = serial(greeter_certs), not_after(greeter_certs)
    first_client_expiry = not_after(client_certs)
    # The files as grpcio's file_watcher reads them; the key never left the agent but for this.
    assert sorted(os.listdir(client_certs)) == [
        "cert-chain.pem", "key.pem", "root-cert.pem", "xds-token"
    ]  # fmt: skip
    assert (client_certs / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (client_certs / "xds-token").stat().st_mode & 0o777 == 0o600

    client = subprocess.Popen(
        [sys.executable, PEER, "client", mesh.target, "--count", "100000", "--seconds", "240",
         "--interval", "0.2", "--fresh"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    results: list[dict[str, Any]] = []
    answered_at: list[float] = []  # when each line arrived (wall clock, as certificates count)

    def read() -> None:
        assert client.stdout is not None
        for line in client.stdout:
            results.append(json.loads(line))
            answered_at.append(time.time())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    first_expiry = max(first_server_expiry, first_client_expiry)

    def renewed_and_past_the_first_expiry() -> bool:
        serials = {r["reply"].rsplit("|", 1)[1] for r in results if r["ok"]}
        return (
            len(serials) >= 2
            and serial(greeter_certs) != first_server
            and any(at > first_expiry + 1 for at in answered_at)
        )

    try:
        wait_until(renewed_and_past_the_first_expiry, timeout=180, interval=0.2)
    finally:
        _stop(client)
        reader.join(30)
    assert server.poll() is None
    assert results
    failed = [r for r in results if not r["ok"]]
    assert failed == []
    # Every call went over mTLS: the server saw the client's SPIFFE id, with the certificate
    # the client's agent held at the time (at least two of them: the renewal was used).
    callers = {tuple(r["reply"].split("|")[:2]) for r in results}
    assert callers == {("greeter", CLIENT)}
    assert len({r["reply"].rsplit("|", 1)[1] for r in results}) >= 2
    # The server is STRICT, as tulle proxy-status shows for proxyless servers.
    assert mesh.server_modes() == {f"127.0.0.1:{mesh.port}": "STRICT"}
    shown = subprocess.run(
        [TULLE, "proxy-status", "--server", mesh.plane.api, "--token", mesh.plane.token],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    # Two streams of the node: grpcio's server, and its agent's (the trust bundle only).
    [row, agent] = sorted(
        (line for line in shown.splitlines() if "greeter-0.default" in line),
        key=lambda line: "(agent)" in line,
    )
    assert row.rstrip().endswith(f"STRICT 127.0.0.1:{mesh.port}"), row
    assert "proxyless (agent)" in agent, agent


def test_a_plain_text_client_is_refused_by_the_strict_server(mesh: Mesh) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{mesh.port}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        channel.unary_unary("/greeter.Greeter/SayHello")(b"hi", timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_principals_admit_the_client_and_refuse_another(
    mesh: Mesh, started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    client = mesh.agent(started, tmp_path / "client", "client-0", "client")
    other = mesh.agent(started, tmp_path / "other", "other-0", "other")
    [before] = mesh.call(other, "--count", "1")
    assert before["reply"].split("|")[:2] == [
        "greeter",
        "spiffe://cluster.local/ns/default/sa/other",
    ]
    mesh.plane.apply(ONLY_CLIENT)
    try:
        # grpcio's RBAC filter (gRFC A41) matches the principal against the caller's URI SAN.
        wait_until(lambda: not mesh.call(other, "--count", "1", "--fresh")[0]["ok"], timeout=60)
        denied = mesh.call(other, "--count", "3", "--fresh")
        assert (
            denied
            == [{"ok": False, "code": "PERMISSION_DENIED", "detail": "Unauthorized RPC rejected"}]
            * 3
        )
        allowed = mesh.call(client, "--count", "3", "--fresh")
        assert [r["ok"] for r in allowed] == [True] * 3
        assert {r["reply"].split("|")[1] for r in allowed} == {CLIENT}
    finally:
        mesh.delete("AuthorizationPolicy", "greeter-callers")
    wait_until(lambda: mesh.call(other, "--count", "1", "--fresh")[0]["ok"], timeout=60)


def test_a_namespace_that_disables_mtls_makes_the_server_plain_text(
    mesh: Mesh, started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    client = mesh.agent(started, tmp_path / "client", "client-0", "client")
    mesh.plane.apply(NAMESPACE_DISABLE)
    try:
        wait_until(lambda: mesh.server_modes() == {f"127.0.0.1:{mesh.port}": "DISABLE"})
        # The client's cluster has no transport socket any more (auto mTLS follows the
        # namespace): plain text, so the server sees no caller.
        wait_until(
            lambda: (
                mesh.call(client, "--count", "1", "--fresh") == [{"ok": True, "reply": "greeter|"}]
            ),
            timeout=60,
        )
    finally:
        mesh.delete("PeerAuthentication", "plain")
    wait_until(lambda: mesh.server_modes() == {f"127.0.0.1:{mesh.port}": "STRICT"})

    def mutual_again() -> bool:
        [result] = mesh.call(client, "--count", "1", "--fresh")
        return result["ok"] and result["reply"].split("|")[1] == CLIENT

    wait_until(mutual_again, timeout=60)


def test_a_token_for_another_replica_gets_no_certificate(mesh: Mesh, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    command = mesh.agent_command(certs, "client-0", mesh.token("other", "other-0"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"tulle agent: no certificate from the CA at {mesh.xds}: PERMISSION_DENIED: the token "
        "of replica other-0.default may not get a certificate for replica client-0.default"
    )
    assert not (certs / "key.pem").exists()
    assert not (certs / "cert-chain.pem").exists()


def test_what_grpcio_cannot_do_without_the_agents_token_file(
    mesh: Mesh, started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    env = mesh.agent(started, tmp_path / "client", "client-0", "client")
    # grpcio 1.85 reads the bootstrap's call_creds only with the experimental flag: without it
    # the stream carries no token and the control plane refuses it.
    bare = {k: v for k, v in env.items() if k != CALL_CREDS_FLAG}
    [refused] = mesh.call(bare, "--count", "1")
    assert refused["code"] == "UNAVAILABLE"
    assert (
        "xDS call failed with no responses received; status: PERMISSION_DENIED: no credential: "
        "send 'authorization: Bearer <bootstrap token>' with the stream" in refused["detail"]
    ), refused
    # The bootstrap token file itself is not a JWT, the only thing jwt_token_file reads.
    config = json.loads(env["GRPC_XDS_BOOTSTRAP_CONFIG"])
    token = mesh.token("client", "probe-0")  # 0600, "<token>\n"
    config["xds_servers"][0]["call_creds"][0]["config"]["jwt_token_file"] = str(token)
    [unparsed] = mesh.call({**env, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(config)}, "--count", "1")
    assert unparsed["code"] == "UNAVAILABLE"
    assert (
        "xDS call failed with no responses received; status: UNAUTHENTICATED: error parsing JWT "
        "token (node ID:proxyless~127.0.0.1~client-0.default~" in unparsed["detail"]
    ), unparsed


def test_the_files_stay_while_the_ca_is_away(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mesh.yaml").write_text(CONFIG.format(port=free_port()))
    state = tmp_path / "state"
    plane = start_control_plane(state, tmp_path / "config", insecure_xds=False)
    mesh = Mesh(plane, 0, state / "root-cert.pem", tmp_path / "unused")
    certs = tmp_path / "certs"
    log = tmp_path / "agent.log"
    command = mesh.agent_command(certs, "client-0", mesh.token("client", "client-0"))
    command[command.index("--log-level") + 1] = "info"
    with open(log, "w") as output:
        agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=output, text=True)
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline() == f"tulle agent: certificates in {certs}\n"
        _stop(plane.proc)
        # Renewal (at about half of the 10 s) finds no CA: the agent says why, keeps running,
        # retries, and the files stay as they were through the retry.
        refused = "workload certificate not renewed (UNAVAILABLE: connect: Connect call failed "
        refused += f"('127.0.0.1', {plane.secure_xds_port}))"
        wait_until(lambda: refused in log.read_text(), timeout=30)
        kept = serial(certs)
        wait_until(lambda: log.read_text().count(refused) >= 2, timeout=30)
        assert agent.poll() is None
        assert serial(certs) == kept
        plane = start_control_plane(
            state, tmp_path / "config", insecure_xds=False, secure_xds_port=plane.secure_xds_port
        )
        wait_until(lambda: serial(certs) != kept, timeout=60)
        assert agent.poll() is None
    finally:
        _stop(agent)
        _stop(plane.proc)


@pytest.fixture(scope="module")
def hello(mesh: Mesh) -> Iterator[Sidecar]:
    """Workload hello in sidecar mode, STRICT: a plain gRPC server behind its sidecar, whose
    certificate comes from the CA as every sidecar's does; its endpoint is in the mesh."""
    started: list[subprocess.Popen[str]] = []
    try:
        app = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "grpc" / "greeter_server.py"), "--name", "hello"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        started.append(app)
        assert app.stdout is not None
        app_port = int(app.stdout.readline().split()[1])
        inbound = free_port()
        node = "sidecar~127.0.0.1~hello-0.default~default.svc.cluster.local"
        proc = subprocess.Popen(
            [TULLE, "proxy", "--xds", mesh.xds, "--xds-root-cert", str(mesh.root),
             "--token-file", str(mesh.token("hello", "hello-0")), "--node-id", node,
             "--admin-port", "0", "--http-proxy-port", "0", "--inbound-port", str(inbound),
             "--app-port", str(app_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        started.append(proc)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("tulle proxy: admin"), line
        admin = int(line.split("admin 127.0.0.1:")[1].split(",")[0])
        sidecar = Sidecar(proc, admin, int(line.rsplit(":", 1)[1]), node)
        wait_until(sidecar.ready, timeout=30)
        mesh.plane.register(
            service="hello", address="127.0.0.1", port=inbound, servicePort=50052,
            protocol="GRPC", serviceAccount="hello",
            labels={"security.istio.io/tlsMode": "istio"},
        )  # fmt: skip
        yield sidecar
    finally:
        for proc in reversed(started):
            _stop(proc)


def test_a_proxyless_client_calls_a_strict_sidecar_over_mtls(
    mesh: Mesh, hello: Sidecar, started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    client = mesh.agent(started, tmp_path / "client", "client-0", "client")
    other = mesh.agent(started, tmp_path / "other", "other-0", "other")
    hybrid = [sys.executable, PEER, "client", HELLO, "--count", "3", "--fresh"]

    def call(env: dict[str, str]) -> list[dict[str, Any]]:
        proc = subprocess.run(
            hybrid, capture_output=True, text=True, env=env, timeout=120, check=True
        )
        return [json.loads(line) for line in proc.stdout.splitlines()]

    # The sidecar is STRICT, so the grpcio client got through over mTLS, with its agent's
    # certificate: the sidecar counts the call under the client's principal.
    assert call(client) == [{"ok": True, "reply": "hello"}] * 3
    counted = re.compile(
        r'^tulle_requests_total\{[^}]*connection_security_policy="mutual_tls"[^}]*'
        r'reporter="destination"[^}]*'
        r'source_principal="spiffe://cluster.local/ns/default/sa/client"[^}]*\} 3(\.0)?$',
        re.M,
    )
    wait_until(lambda: counted.search(hello.admin("/stats/prometheus").text) is not None)
    mesh.plane.apply(HELLO_ONLY_CLIENT)
    try:
        wait_until(lambda: not call(other)[0]["ok"], timeout=60)
        # The sidecar's RBAC answers a gRPC caller with a gRPC status and its reason.
        assert (
            call(other)
            == [
                {
                    "ok": False,
                    "code": "PERMISSION_DENIED",
                    "detail": "denied: no ALLOW policy matches (default/hello-callers)",
                }
            ]
            * 3
        )
        assert call(client) == [{"ok": True, "reply": "hello"}] * 3
    finally:
        mesh.delete("AuthorizationPolicy", "hello-callers")
