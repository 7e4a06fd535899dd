"""The token file ``tulle agent`` writes for grpcio's ``jwt_token_file`` call credentials: a
bootstrap token wrapped in the JWT shape grpcio insists on, a Kubernetes service-account token
(a JWT already, here read from the kubelet's projected layout at 0644) as it is."""

from __future__ import annotations

from pathlib import Path

from tests.agent.test_settings import settings
from tests.security.test_tokens import project
from tulle.agent.agent import TOKEN_FILE, CertificateAgent
from tulle.security.grpc_token import unwrap


def written(tmp_path: Path, token_file: Path) -> str:
    given = settings(tmp_path, token_file=token_file)
    given.directory.mkdir(exist_ok=True)
    CertificateAgent(given).write_token()
    return (given.directory / TOKEN_FILE).read_text()


def test_a_bootstrap_token_is_wrapped(tmp_path: Path) -> None:
    token = tmp_path / "bootstrap"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    envelope = written(tmp_path, token)
    assert envelope.count(".") == 2
    assert unwrap(envelope) == "s3cret"


def test_a_service_account_token_is_written_as_it_is(tmp_path: Path) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsidHVsbGUtY2EiXX0.c2lnbmF0dXJl"
    token = project(tmp_path / "tokens", "tulle-token", jwt + "\n", 0o644)
    assert written(tmp_path, token) == jwt
