"""Proxyless gRPC under zero trust (the package's docstring says how): a proxyless client calls a STRICT
sidecar workload over mTLS (the sidecar counts it under the client's principal, and its RBAC
refuses another with a gRPC status)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    EXAMPLES,
    Sidecar,
    _stop,
    wait_until,
)
from tests.e2e.proxyless_mtls.proxyless import (
    HELLO,
    HELLO_ONLY_CLIENT,
    PEER,
    TULLE,
    Mesh,
    free_port,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("proxyless-mtls"),  # one worker for all: one mesh (conftest.py)
]


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
