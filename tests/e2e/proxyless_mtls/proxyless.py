"""What the proxyless mTLS tests share: their mesh's config and policies, the greeter's target
and the client's identity, and Mesh: the control plane, the greeter server under its agent,
and tokens, bootstraps, agents and calls for clients; the serial and expiry of an agent's
certificate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from tests.e2e.conftest import (
    BIN,
    HERE,
    ControlPlane,
)

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
