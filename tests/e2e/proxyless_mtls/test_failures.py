"""Proxyless gRPC under zero trust (the package's docstring says how): exactly what fails without the
pieces: another replica's token (no certificate), grpcio without the call-credentials flag or
with a token file that is not a JWT (no config)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.proxyless_mtls.proxyless import (
    CALL_CREDS_FLAG,
    Mesh,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("proxyless-mtls"),  # one worker for all: one mesh (conftest.py)
]


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
